"""Decide what each site's certificate needs. Pure: ``now`` and every input passed in.

For each desired site the planner compares the lineage on disk (if any) with
what the site needs and returns one ``Decision``:

==========  =================================================================
``ok``      the certificate covers exactly the site's names and is not due
``issue``   no certificate yet
``expand``  the name set changed: the same lineage gets the new names
``rekey``   the key type or the ACME server changed
``renew``   the renewal moment has come (1/3 of the lifetime left, 1/2 for
            certificates shorter than 10 days, or earlier if ARI says so)
``wait``    one of the above, but a back-off or a rate limit says "not yet"
==========  =================================================================

Back-off after failures follows the CA's integration guide: 1 min, 10 min,
100 min, then daily; a Retry-After or a rate-limit's "retry after" always wins.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping

from sidecar.core.model import Certificate, Site

BACKOFF = (timedelta(minutes=1), timedelta(minutes=10), timedelta(minutes=100), timedelta(days=1))
SHORT_LIVED = timedelta(days=10)


class Action(str, enum.Enum):
    OK = "ok"
    ISSUE = "issue"
    EXPAND = "expand"
    REKEY = "rekey"
    RENEW = "renew"
    WAIT = "wait"


@dataclass(frozen=True)
class Attempt:
    """What the last failed attempts for one lineage left behind (persisted by the ledger)."""

    failures: int = 0
    last_failure: datetime | None = None
    last_error: str = ""
    # The names that failed: a change of names is new input and resets the back-off.
    domains: tuple[str, ...] = ()
    # A CA-imposed pause (Retry-After or rate limit); honoured even if the names change.
    not_before: datetime | None = None


@dataclass(frozen=True)
class Policy:
    key_type: str = "ecdsa"
    acme_server: str = ""
    backoff: tuple[timedelta, ...] = BACKOFF


@dataclass(frozen=True)
class Decision:
    site: Site
    action: Action
    reason: str
    # For WAIT: when to try; for OK: when renewal becomes due.
    at: datetime | None = None
    # What would be done once the wait is over (WAIT only).
    pending: Action | None = None

    @property
    def needs_certbot(self) -> bool:
        return self.action in (Action.ISSUE, Action.EXPAND, Action.REKEY, Action.RENEW)


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...] = ()
    next_wakeup: datetime | None = field(default=None)

    @property
    def to_run(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.needs_certbot)


def backoff_delay(failures: int, schedule: tuple[timedelta, ...] = BACKOFF) -> timedelta:
    if failures <= 0 or not schedule:
        return timedelta(0)
    return schedule[min(failures, len(schedule)) - 1]


def jitter(name: str, span: timedelta) -> timedelta:
    """A stable per-lineage offset in [0, span): spreads renewals without randomness in tests."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return timedelta(seconds=(digest % 10_000) / 10_000 * span.total_seconds())


def ari_plausible(cert: Certificate, window: tuple[datetime, datetime]) -> bool:
    """A window that lies within the certificate's validity. Others (a test CA's
    fixed +-1 day around short certificates, clock skew) are ignored in favour of
    the lifetime rule, so a 40-second certificate is not renewed only at expiry."""
    start, end = window
    return cert.not_before <= start <= end <= cert.not_after


def renewal_time(cert: Certificate, ari_window: tuple[datetime, datetime] | None = None) -> datetime:
    """When ``cert`` should be renewed. An ARI window, when known and plausible, takes precedence."""
    if ari_window is not None and ari_plausible(cert, ari_window):
        start, end = ari_window
        if end <= start:
            return start
        return start + jitter(cert.name + str(cert.serial), end - start)
    lifetime = cert.not_after - cert.not_before
    remaining = lifetime / 2 if lifetime < SHORT_LIVED else lifetime / 3
    due = cert.not_after - remaining
    # Spread lineages over up to 1% of the lifetime (at most 12 h) before the due moment.
    return due - jitter(cert.name, min(lifetime / 100, timedelta(hours=12)))


def _needed(site: Site, cert: Certificate | None, policy: Policy, now: datetime,
            ari_window: tuple[datetime, datetime] | None) -> Decision:
    if cert is None:
        return Decision(site, Action.ISSUE, "no certificate yet")
    if not cert.matches(site.domains):
        added = sorted(set(site.domains) - cert.names)
        dropped = sorted(cert.names - set(site.domains))
        parts = ([f"adds {', '.join(added)}"] if added else []) + ([f"drops {', '.join(dropped)}"] if dropped else [])
        return Decision(site, Action.EXPAND, "names changed: " + "; ".join(parts))
    wanted_key = getattr(getattr(site, "options", None), "key_type", None) or policy.key_type
    # An adopted certificate (another tool's) is served until due, whatever its key; its successor has ours.
    if cert.key_type != wanted_key and not cert.adopted_from:
        return Decision(site, Action.REKEY, f"key type {cert.key_type} -> {wanted_key}")
    if policy.acme_server and cert.acme_server and cert.acme_server != policy.acme_server:
        return Decision(site, Action.REKEY, f"ACME server changed ({cert.acme_server} -> {policy.acme_server})")
    # Never later than expiry, whatever an ARI window says.
    due = min(renewal_time(cert, ari_window), cert.not_after)
    if now >= due:
        if now >= cert.not_after:
            return Decision(site, Action.RENEW, f"expired at {cert.not_after:%Y-%m-%d %H:%M} UTC")
        return Decision(site, Action.RENEW, f"due since {due:%Y-%m-%d %H:%M} UTC (expires {cert.not_after:%Y-%m-%d %H:%M} UTC)")
    adopted = f" (adopted from {cert.adopted_from})" if cert.adopted_from else ""
    return Decision(site, Action.OK, f"valid until {cert.not_after:%Y-%m-%d %H:%M} UTC{adopted}", at=due)


def decide(
    site: Site,
    cert: Certificate | None,
    attempt: Attempt | None,
    policy: Policy,
    now: datetime,
    ari_window: tuple[datetime, datetime] | None = None,
    forced: bool = False,
) -> Decision:
    decision = _needed(site, cert, policy, now, ari_window)
    if forced and decision.action == Action.OK:
        decision = Decision(site, Action.RENEW, "renewal requested by operator")
    if not decision.needs_certbot or attempt is None:
        return decision
    waits: list[tuple[datetime, str]] = []
    if attempt.not_before is not None and now < attempt.not_before:
        waits.append((attempt.not_before, "the CA asked to retry after this time"))
    if attempt.failures and attempt.last_failure is not None and set(attempt.domains) == set(site.domains):
        retry = attempt.last_failure + backoff_delay(attempt.failures, policy.backoff)
        if now < retry:
            waits.append((retry, f"back-off after {attempt.failures} failure{'s' if attempt.failures > 1 else ''}"))
    if not waits:
        return decision
    at, why = max(waits)
    last = f"; last error: {attempt.last_error}" if attempt.last_error else ""
    return Decision(site, Action.WAIT, f"{decision.reason}; {why}{last}", at=at, pending=decision.action)


def plan(
    sites: tuple[Site, ...] | list[Site],
    certificates: Mapping[str, Certificate],
    attempts: Mapping[str, Attempt],
    policy: Policy,
    now: datetime,
    ari_windows: Mapping[str, tuple[datetime, datetime]] | None = None,
    forced: frozenset[str] = frozenset(),
) -> Plan:
    """Decide for every site; certbot work comes first for new sites, then renewals.

    ``forced``: sites an operator asked to renew now (``renew NAME --force``), even if not due.
    """
    ari_windows = ari_windows or {}
    decisions = [
        decide(s, certificates.get(s.name), attempts.get(s.name), policy, now, ari_windows.get(s.name),
               forced=s.name in forced)
        for s in sites
    ]
    order = {Action.ISSUE: 0, Action.EXPAND: 1, Action.REKEY: 2, Action.RENEW: 3}
    decisions.sort(key=lambda d: (order.get(d.action, 9), d.site.name))
    times = [d.at for d in decisions if d.at is not None]
    return Plan(decisions=tuple(decisions), next_wakeup=min(times) if times else None)
