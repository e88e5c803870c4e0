"""Sites + certificates -> the nginx files the sidecar owns. Pure (Jinja2 templates).

The sidecar owns only files named ``sidecar-*.conf`` in the shared conf.d volume:

- ``sidecar-00-global.conf``   shared TLS session cache, the port-80 listener that
  serves ACME challenges and redirects everything else to HTTPS (308), and a
  catch-all HTTPS server that refuses unknown names.
- ``sidecar-site-NAME.conf``   one per site, written only once the site's
  certificate exists, so nginx is never pointed at a missing file.

Anything else in the directory (hand-written configs) is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import jinja2

from . import __version__
from .model import Certificate, Site

OWNED_PREFIX = "sidecar-"
GLOBAL_FILE = "sidecar-00-global.conf"

MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


@dataclass(frozen=True)
class NginxTraits:
    """What the running nginx supports, probed once through ``docker exec``."""

    ipv6: bool = False
    # OpenSSL 3.5+ offers the hybrid post-quantum group X25519MLKEM768.
    post_quantum: bool = False


@dataclass(frozen=True)
class TlsProfile:
    protocols: str
    ciphers: str
    curves: str
    hsts_max_age: int = 63072000  # two years


def tls_profile(traits: NginxTraits, profile: str = "intermediate") -> TlsProfile:
    curves = ("X25519MLKEM768:" if traits.post_quantum else "") + "X25519:prime256v1:secp384r1"
    if profile == "modern":
        return TlsProfile(protocols="TLSv1.3", ciphers="", curves=curves)
    return TlsProfile(protocols="TLSv1.2 TLSv1.3", ciphers=MOZILLA_INTERMEDIATE_CIPHERS, curves=curves)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("sidecar", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # nginx config, not HTML; every value is validated before it gets here
    keep_trailing_newline=True,
    trim_blocks=False,
)


def site_filename(site_name: str) -> str:
    return f"{OWNED_PREFIX}site-{site_name}.conf"


def upstream_name(site_name: str) -> str:
    # Names are normalised host names ([a-z0-9.-]): mapping only "." keeps them distinct.
    return "sidecar_" + re.sub(r"[^a-z0-9-]", "_", site_name)


def render_global(webroot: str, traits: NginxTraits) -> str:
    return _ENV.get_template("global.conf.j2").render(version=__version__, webroot=webroot, ipv6=traits.ipv6)


def render_site(site: Site, cert: Certificate, traits: NginxTraits, profile: str = "intermediate") -> str:
    """The HTTPS server for ``site``, answering only the names ``cert`` covers."""
    names = [d for d in site.domains if d in cert.names]
    return _ENV.get_template("site.conf.j2").render(
        version=__version__,
        site=site,
        server_names=names,
        cert=cert,
        ipv6=traits.ipv6,
        tls=tls_profile(traits, profile),
        upstream_name=upstream_name(site.name),
    )


def render_all(
    sites: tuple[Site, ...] | list[Site],
    certificates: Mapping[str, Certificate],
    webroot: str,
    traits: NginxTraits,
    profile: str = "intermediate",
) -> dict[str, str]:
    """filename -> content for every file the sidecar wants in conf.d right now.

    A site gets its HTTPS server block only once its lineage exists, and answers
    only the names the certificate covers (a name being added waits for the
    expanded certificate; the others keep serving meanwhile).
    """
    files = {GLOBAL_FILE: render_global(webroot, traits)}
    for site in sites:
        cert = certificates.get(site.name)
        if cert is None or not set(site.domains) & cert.names:
            continue
        files[site_filename(site.name)] = render_site(site, cert, traits, profile)
    return files
