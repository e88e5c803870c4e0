"""Hand-written nginx files as a source: the certificates their server blocks name (bring your own config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from sidecar.core import nginxconf
from sidecar.core.model import Certificate, Problem, Site, SiteOptions, SourceKind
from sidecar.core.settings import Settings


@dataclass(frozen=True)
class ConfView:
    sites: tuple[Site, ...]
    problems: tuple[Problem, ...]
    # ports on which a hand-written server is the default_server (the sidecar's catch-all steps aside)
    user_defaults: frozenset[int]
    # every file the hand-written config reads (for the fingerprint of what nginx must reload)
    files: tuple[str, ...]


def read_confs(settings: Settings, existing: Mapping[str, Certificate]) -> ConfView:
    parsed = nginxconf.parse_tree(nginxconf.conf_d_roots(settings.conf_dir), "/etc/nginx")
    demands, problems = nginxconf.certificate_demands(parsed.servers, str(settings.certs_dir))
    sites = []
    for demand in demands:
        current = existing.get(demand.name)
        sites.append(Site(
            domains=demand.domains,
            upstreams=(),
            source=f"nginx config {demand.sources[0]}",
            source_kind=SourceKind.NGINX_CONF,
            cert_name=demand.name,
            # Adopted lineages keep their key type (an RSA lineage made by hand stays RSA).
            options=SiteOptions(key_type=current.key_type if current else None),
        ))
    return ConfView(tuple(sites), (*parsed.problems, *problems),
                    frozenset(nginxconf.default_server_ports(parsed.servers)), parsed.files)
