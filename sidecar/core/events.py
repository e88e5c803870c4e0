"""What the reconciler tells the outside world: events and pass snapshots.

The reconciler calls an ``Observer`` (metrics, alerts, status) and never knows
what is behind it. Observers must not raise and must return quickly.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Protocol, Sequence

log = logging.getLogger(__name__)


class Kind(str, enum.Enum):
    SITE_ADDED = "site_added"
    SITE_CHANGED = "site_changed"        # names, upstreams or options changed; details: domains, upstreams
    SITE_REMOVED = "site_removed"
    SITE_LIVE = "site_live"
    CERT_REQUESTED = "cert_requested"
    CERT_ISSUED = "cert_issued"          # first certificate, or new names
    CERT_RENEWED = "cert_renewed"
    CERT_FAILED = "cert_failed"          # details: failure (certbot.Failure value), error, next_attempt
    CERT_POSTPONED = "cert_postponed"    # waiting for back-off or a rate limit; details: until, why
    CERT_EXPIRING = "cert_expiring"      # close to expiry without a successful renewal; details: not_after
    RELOAD = "reload"                    # details: written, removed
    NGINX_REJECTED = "nginx_rejected"    # details: file, error
    PLACEHOLDER_WRITTEN = "placeholder_written"  # a hand-written config's certificate, until the real one; details: domains
    CONF_SET_ASIDE = "conf_set_aside"    # a hand-written file nginx rejects was renamed; details: file, aside, error
    INPUT_PROBLEM = "input_problem"      # details: source, message
    DOMAIN_CONFLICT = "domain_conflict"  # also an input_problem; site: the holder's; details: source, error
    DOCKER_UNAVAILABLE = "docker_unavailable"
    CONSUMER_SIGNALLED = "consumer_signalled"  # a consumer container told of its new certificate; details: container, signal, serial
    CONSUMER_FAILED = "consumer_failed"        # telling it failed; details: container, signal, error, failures, next_attempt
    NODE_BUNDLE = "node_bundle"          # Swarm: a node's bundle state changed; details: node, hostname, version, state, detail


@dataclass(frozen=True)
class Event:
    kind: Kind
    at: datetime
    site: str = ""
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteStatus:
    name: str
    domains: tuple[str, ...]
    source: str
    state: str                 # planner action: ok, issue, expand, rekey, renew, wait
    reason: str
    live: bool
    not_after: datetime | None = None
    not_before: datetime | None = None
    next_renewal: datetime | None = None
    next_attempt: datetime | None = None
    last_error: str = ""
    failures: int = 0
    issuer: str = ""           # the certificate's issuer (common name), "" without one


@dataclass(frozen=True)
class PassSnapshot:
    at: datetime
    sites: Sequence[SiteStatus]
    problems: Sequence[str]
    # rate-limit budgets: name -> remaining (see ledger.budgets)
    budgets: dict[str, int] = field(default_factory=dict)
    # working, but not fully: each says what is missing and what it holds back (health: "degraded")
    degraded: Sequence[str] = ()
    # hand-written conf.d files set aside because nginx rejects them: file -> nginx's error
    set_aside: Mapping[str, str] = field(default_factory=dict)


class Observer(Protocol):
    def event(self, event: Event) -> None: ...

    def snapshot(self, snap: PassSnapshot) -> None: ...


class Observers:
    """Fan out to several observers; one failing observer never breaks the loop."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def event(self, event: Event) -> None:
        for o in self.observers:
            try:
                o.event(event)
            except Exception:  # noqa: BLE001 - an observer bug must not stop certificates
                log.exception("observer %s failed on %s", type(o).__name__, event.kind.value)

    def snapshot(self, snap: PassSnapshot) -> None:
        for o in self.observers:
            try:
                o.snapshot(snap)
            except Exception:  # noqa: BLE001
                log.exception("observer %s failed on a snapshot", type(o).__name__)
