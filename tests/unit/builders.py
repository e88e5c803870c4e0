"""Small constructors for the frozen model types, so tables stay readable."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from sidecar.state.certs import parse_certificate
from sidecar.core.model import Certificate, ContainerInfo, Owner, Site, SourceKind, Upstream

from .certfactory import make_cert

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def site(
    *domains: str,
    upstream: tuple[str, str, int] = ("http", "10.0.0.2", 80),
    source: str | None = None,
    kind: SourceKind = SourceKind.CONTAINER,
    created: str = "",
    owner: Owner | None = None,
) -> Site:
    scheme, host, port = upstream
    return Site(
        domains=tuple(domains),
        upstreams=(Upstream(scheme, host, port),),
        source=source or f"{kind.value} {domains[0]}",
        source_kind=kind,
        created=created,
        owner=owner,
    )


def container(
    name: str = "app",
    labels: dict[str, str] | None = None,
    networks: dict[str, str] | None = None,
    exposed: tuple[int, ...] = (),
    created: str = "2026-01-01T00:00:00Z",
    running: bool = True,
) -> ContainerInfo:
    return ContainerInfo(
        id=f"id-{name}",
        name=name,
        labels=labels if labels is not None else {"acme.domains": f"{name}.example.com"},
        networks=networks if networks is not None else {"web": "172.18.0.5"},
        exposed_ports=exposed,
        created=created,
        running=running,
    )


def cert(
    *names: str,
    lifetime: timedelta = timedelta(days=90),
    not_before: datetime = NOW - timedelta(days=10),
    key_type: str = "ecdsa",
    lineage: str | None = None,
    acme_server: str = "",
    ocsp: bool = False,
) -> Certificate:
    """A ``Certificate`` parsed from a real certificate signed by the test CA."""
    pem, _ = make_cert(names, not_before, not_before + lifetime, key_type=key_type, ocsp=ocsp)
    name = lineage or names[0]
    parsed = parse_certificate(
        pem, name, f"/etc/letsencrypt/live/{name}/fullchain.pem", f"/etc/letsencrypt/live/{name}/privkey.pem"
    )
    return replace(parsed, acme_server=acme_server)


def assert_nginx_syntax_sane(text: str) -> None:
    """Balanced braces, and every directive line ends with ';', '{' or '}'."""
    depth = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"line {n}: unbalanced '}}': {raw!r}"
        assert line.endswith((";", "{", "}")), f"line {n}: {raw!r}"
        assert "{{" not in line and "{%" not in line, f"line {n}: template leftovers: {raw!r}"
    assert depth == 0, "unbalanced braces"
