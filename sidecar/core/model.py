"""Frozen domain types shared by the pure core and the adapters."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

WILDCARD_LINEAGE_PREFIX = "wildcard."

class SourceKind(str, enum.Enum):
    CONTAINER = "container"
    FILE = "file"
    # A hand-written nginx server block naming a lineage: the sidecar only keeps
    # the certificate (never renders a vhost for it).
    NGINX_CONF = "nginx-conf"
    # A container that uses the certificate itself (label acme.consumer): no vhost either.
    CONSUMER = "consumer"


@dataclass(frozen=True)
class Upstream:
    """Where nginx proxies a site to. ``host`` is an IP address or a DNS name."""

    scheme: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port`` as URLs and nginx's ``server`` write it (an IPv6 host in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"


@dataclass(frozen=True)
class Hsts:
    """A Strict-Transport-Security policy (validated and bounded by ``options``)."""

    max_age: int = 63072000  # two years
    include_subdomains: bool = False
    preload: bool = False

    @property
    def header(self) -> str:
        return "; ".join(
            [f"max-age={self.max_age}"]
            + (["includeSubDomains"] if self.include_subdomains else [])
            + (["preload"] if self.preload else [])
        )


@dataclass(frozen=True)
class SiteOptions:
    """Per-site settings from labels or the sites file, each validated by ``options``.

    ``None`` means "the global default" (an environment variable of the sidecar).
    """

    tls: str | None = None  # "intermediate" | "modern"; None: TLS_PROFILE
    hsts: Hsts | None = Hsts()  # None: no HSTS header
    max_body_size: str | None = None  # nginx size such as "10m"; None: nginx's default (1m)
    redirect: str | None = None  # "www-to-apex" | "apex-to-www"
    websocket: bool = True
    key_type: str | None = None  # "ecdsa" | "rsa"; None: ACME_KEY_TYPE
    acme_profile: str | None = None  # certbot --preferred-profile; None: ACME_PROFILE
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers (name, value)
    # option key -> where it was set, e.g. ("hsts", "label acme.hsts"); unset keys are defaults.
    origins: tuple[tuple[str, str], ...] = ()
    challenge: str | None = None  # "http-01" | "dns-01"; None: ACME_CHALLENGE
    dns_provider: str | None = None  # "rfc2136", "cloudflare:work", ... (core.dns); None: ACME_DNS_PROVIDER
    http3: bool | None = None  # HTTP/3 (QUIC) next to HTTP/2; None: HTTP3

    def origin(self, key: str) -> str:
        return dict(self.origins).get(key, "default")


class OwnerKind(str, enum.Enum):
    """What makes containers one owner of a site (replicas share it, anyone else is refused)."""

    GROUP = "group"                      # the same ``acme.group`` label: deliberate sharing
    SWARM = "Swarm service"              # label com.docker.swarm.service.name
    COMPOSE = "Compose service"          # labels com.docker.compose.project and .service
    CONTAINER = "container"              # neither: the container alone, by its name


@dataclass(frozen=True)
class Owner:
    """Who a container site belongs to. Sites with equal owners (and domains) are replicas."""

    kind: OwnerKind
    name: str
    # How the group label is spelled (its prefix is configurable): only for messages.
    group_label: str = field(default="acme.group", compare=False)

    def __str__(self) -> str:
        # Compose and Swarm labels are arbitrary text: keep messages on one line.
        name = self.name if self.name.isprintable() and len(self.name) <= 100 else repr(self.name[:100])
        if self.kind is OwnerKind.GROUP:
            return f"{self.group_label}={name}"
        return f"{self.kind.value} {name}"


@dataclass(frozen=True)
class Site:
    """One vhost with one certificate lineage, named after its first domain."""

    domains: tuple[str, ...]
    # One or more servers; replicas of a scaled service share one site.
    upstreams: tuple[Upstream, ...]
    source: str
    source_kind: SourceKind
    # Tie-breaker for conflicts between containers: older claims win.
    created: str = ""
    notes: tuple[str, ...] = ()
    options: SiteOptions = SiteOptions()
    # Lineage name when it is not the first domain (hand-written configs name their own).
    cert_name: str = ""
    # Container sites: who may share the site (replicas of one service). None for the sites
    # file and hand-written configs, and for a container site built without one (never shares).
    owner: Owner | None = None
    # Files nginx includes in the site's HTTPS server and in its ``location /`` (nginx-proxy's vhost.d).
    includes: tuple[str, ...] = ()
    location_includes: tuple[str, ...] = ()

    @functools.cached_property
    def name(self) -> str:
        """The lineage (and site) name: the first domain; ``*.example.com`` is named
        ``wildcard.example.com`` (a lineage name cannot start with ``*``). Worked out once per
        site (asked for hundreds of thousands of times in a pass at ten thousand sites)."""
        if self.cert_name:
            return self.cert_name
        first = self.domains[0]
        return WILDCARD_LINEAGE_PREFIX + first[2:] if first.startswith("*.") else first

    @property
    def upstream_scheme(self) -> str:
        return self.upstreams[0].scheme if self.upstreams else ""


class ProblemKind(str, enum.Enum):
    INPUT = "input"                      # a bad label, sites file entry, nginx config, ...
    DOMAIN_CONFLICT = "domain_conflict"  # a claim on a domain another owner holds
    WARNING = "warning"                  # the site is served, but part of its input was not translated


@dataclass(frozen=True)
class Problem:
    """A bad input, reported once, that left one site (or entry) out."""

    source: str
    message: str
    kind: ProblemKind = ProblemKind.INPUT
    # DOMAIN_CONFLICT: the site that keeps the domain.
    site: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True)
class ContainerInfo:
    """What the sidecar needs to know about one container, without SDK objects."""

    id: str
    name: str
    labels: Mapping[str, str]
    # network name -> IPv4 address on that network ("" when none)
    networks: Mapping[str, str]
    exposed_ports: tuple[int, ...] = ()
    created: str = ""
    running: bool = True


@dataclass(frozen=True)
class SwarmService:
    """A Swarm service, from ``GET /services`` (its ``deploy.labels``, not its containers' labels)."""

    id: str
    name: str
    labels: Mapping[str, str]
    created: str = ""  # sortable (the older service owns a contested domain)


@dataclass(frozen=True)
class SwarmTask:
    """A Swarm task, from ``GET /tasks``: where it runs and its address on each overlay network."""

    id: str
    service_id: str
    node_id: str
    slot: int
    running: bool  # desired and actual state both "running"
    networks: Mapping[str, str]  # network name -> IPv4 address


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    role: str          # manager | worker
    available: bool    # availability active and state ready


@dataclass(frozen=True)
class Certificate:
    """A certificate lineage on disk, as read by ``certs``."""

    name: str
    names: frozenset[str]
    not_before: datetime
    not_after: datetime
    issuer: str
    key_type: str
    serial: int
    authority_key_id: bytes | None = None
    has_ocsp_url: bool = False
    fullchain_path: str = ""
    privkey_path: str = ""
    # ACME directory the lineage was issued from (certbot's renewal/NAME.conf), "" if unknown.
    acme_server: str = ""
    # Made by another tool and served as it is (ADOPT_CERTS_DIR): where it lies; "" for lineages.
    adopted_from: str = ""

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    def covers(self, domains: tuple[str, ...] | frozenset[str]) -> bool:
        return set(domains) <= self.names

    def matches(self, domains: tuple[str, ...] | frozenset[str]) -> bool:
        return set(domains) == self.names


@dataclass(frozen=True)
class DesiredState:
    sites: tuple[Site, ...]
    problems: tuple[Problem, ...] = field(default=())

    def by_name(self) -> dict[str, Site]:
        return {s.name: s for s in self.sites}
