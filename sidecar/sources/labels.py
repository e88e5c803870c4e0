"""Container labels -> sites. Pure: works on ``ContainerInfo`` snapshots only.

Labels (the prefix defaults to ``acme`` and is set by ``ACME_LABEL_PREFIX``):

==================  ========================================================
``acme.domains``    required; comma- or space-separated host names
``acme.port``       port the app listens on (default: its only exposed port, else 80)
``acme.network``    network nginx reaches the app on (default: the first shared one)
``acme.scheme``     ``http`` (default) or ``https`` towards the app
``acme.group``      share the site with containers carrying the same value
==================  ========================================================

Who owns a container's site (``Site.owner``): the ``acme.group`` value when set, else its
Swarm service, else its Compose project and service, else the container itself. Only sites
of one owner are replicas of each other (see ``desired.merge``).

Per-site options (validated in ``options``; each is optional): ``acme.tls``,
``acme.hsts``, ``acme.max_body_size``, ``acme.redirect``, ``acme.websocket``,
``acme.key_type``, ``acme.profile``, ``acme.challenge``, ``acme.dns_provider``, ``acme.http3`` and
``acme.header.<Name>`` (extra response headers). Wildcard domains need ``dns-01``.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from sidecar.core import options
from sidecar.core.domains import DomainError, parse_domain_list
from sidecar.core.model import ContainerInfo, Owner, OwnerKind, Problem, Site, SourceKind, Upstream

KNOWN_KEYS = ("domains", "port", "network", "scheme", "group")
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
SWARM_SERVICE = "com.docker.swarm.service.name"
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def label_source(container: ContainerInfo, key: str) -> str:
    """Where a label problem came from, on one line (label keys are arbitrary text)."""
    shown = key if key.isprintable() and len(key) <= 100 else repr(key[:100])
    return f"container {container.name} label {shown}"


def parse_port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 5 or not 1 <= int(raw) <= 65535:
        raise ValueError(f"{raw[:40]!r} is not a port number (1-65535)")
    return int(raw)


def owner_of(container: ContainerInfo, prefix: str) -> Owner | Problem:
    """Who the container's site belongs to (a Problem for a bad ``<prefix>.group`` label)."""
    key = f"{prefix}.group"
    if key in container.labels:
        group = container.labels[key].strip()
        if not GROUP_NAME.fullmatch(group):
            return Problem(label_source(container, key),
                           f"{group[:40]!r} is not a group name (1-63 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit)")
        return Owner(OwnerKind.GROUP, group, key)
    swarm = container.labels.get(SWARM_SERVICE, "")
    if swarm:
        return Owner(OwnerKind.SWARM, swarm, key)
    project, service = container.labels.get(COMPOSE_PROJECT, ""), container.labels.get(COMPOSE_SERVICE, "")
    if project and service:
        return Owner(OwnerKind.COMPOSE, f"{project}/{service}", key)
    return Owner(OwnerKind.CONTAINER, container.name, key)


def site_from_container(
    container: ContainerInfo, prefix: str, nginx_networks: Iterable[str],
    defaults: options.Defaults = options.Defaults(),
) -> Site | Problem | None:
    """Return the container's site, a Problem saying why it has none, or None if unlabelled."""
    p = prefix + "."
    labels = {k[len(p):]: v for k, v in container.labels.items() if k.startswith(p)}
    if "domains" not in labels:
        return None
    unknown = sorted(
        k for k in set(labels) - set(KNOWN_KEYS) - set(options.OPTION_KEYS) - {"nginx", "consumer", "consumer.signal"}
        if not k.startswith(options.HEADER_PREFIX)
    )
    if unknown:
        known = [p + k for k in KNOWN_KEYS + options.OPTION_KEYS] + [p + options.HEADER_PREFIX + "<Name>"]
        return Problem(label_source(container, p + unknown[0]), f"unknown label (known: {', '.join(known)})")
    try:
        domains = parse_domain_list(labels["domains"], wildcard=True)
    except DomainError as exc:
        return Problem(label_source(container, p + "domains"), str(exc))

    scheme = labels.get("scheme", "http").strip().lower()
    if scheme not in ("http", "https"):
        return Problem(label_source(container, p + "scheme"), f"{scheme[:40]!r} must be http or https")

    if "port" in labels:
        try:
            port = parse_port(labels["port"].strip())
        except ValueError as exc:
            return Problem(label_source(container, p + "port"), str(exc))
    elif len(container.exposed_ports) == 1:
        port = container.exposed_ports[0]
    else:
        port = 80

    shared = sorted(set(container.networks) & set(nginx_networks))
    wanted = labels.get("network", "").strip()
    if wanted:
        if wanted not in container.networks:
            return Problem(
                label_source(container, p + "network"),
                f"container is not attached to network {wanted[:80]!r}",
            )
        if wanted not in shared:
            return Problem(
                label_source(container, p + "network"),
                f"nginx is not attached to network {wanted[:80]!r}",
            )
        network = wanted
    elif shared:
        network = shared[0]
    else:
        return Problem(
            f"container {container.name}",
            "shares no network with nginx (nginx is on: "
            + (", ".join(sorted(nginx_networks)) or "none")
            + "); start it with --network on one of those",
        )
    address = container.networks.get(network, "")
    if not address:
        return Problem(f"container {container.name}", f"has no IP address on network {network}")

    try:
        site_options = options.build(
            {k: v for k, v in labels.items() if k in options.OPTION_KEYS},
            [(k[len(options.HEADER_PREFIX):], v) for k, v in sorted(labels.items())
             if k.startswith(options.HEADER_PREFIX)],
            domains,
            lambda key: f"label {p}{key}",
            defaults,
        )
    except options.OptionError as exc:
        return Problem(label_source(container, p + exc.key), str(exc))

    owner = owner_of(container, prefix)
    if isinstance(owner, Problem):
        return owner

    return Site(
        domains=domains,
        upstreams=(Upstream(scheme=scheme, host=address, port=port),),
        source=f"container {container.name}",
        source_kind=SourceKind.CONTAINER,
        created=container.created,
        notes=(f"upstream from network {network}, port from "
               + (f"label {p}port" if "port" in labels else "default"),),
        options=site_options,
        owner=owner,
    )


def sites_from_containers(
    containers: Iterable[ContainerInfo], prefix: str, nginx_networks: Mapping[str, str] | Iterable[str],
    defaults: options.Defaults = options.Defaults(),
) -> tuple[list[Site], list[Problem]]:
    sites: list[Site] = []
    problems: list[Problem] = []
    nets = list(nginx_networks)
    for container in sorted(containers, key=lambda c: (c.created, c.name)):
        if not container.running:
            continue
        result = site_from_container(container, prefix, nets, defaults)
        if isinstance(result, Site):
            sites.append(result)
        elif isinstance(result, Problem):
            problems.append(result)
    return sites, problems
