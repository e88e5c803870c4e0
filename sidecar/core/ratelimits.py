"""The CA's rate limits, checked before asking. Pure apart from the public suffix list.

Budgets are counted over sliding windows from the ledger (a conservative stand-in
for the CA's token buckets: a sliding window never allows more than the bucket).
A request that would exceed a budget is postponed until the window frees up, and
the log says which limit and when.

Registered domains come from the public suffix list (``tldextract`` with the list
Debian ships in ``publicsuffix``, or the package's bundled snapshot; never fetched).
"""

from __future__ import annotations

import functools
import os
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence

SYSTEM_PSL = "/usr/share/publicsuffix/public_suffix_list.dat"


@dataclass(frozen=True)
class Limits:
    exact_set: tuple[int, timedelta]
    registered_domain: tuple[int, timedelta]
    new_orders: tuple[int, timedelta]
    failed_validations: tuple[int, timedelta]


PROFILES: dict[str, Limits | None] = {
    # Let's Encrypt's published limits (see acme-tls-facts.md).
    "letsencrypt": Limits(
        exact_set=(5, timedelta(days=7)),
        registered_domain=(50, timedelta(days=7)),
        new_orders=(300, timedelta(hours=3)),
        failed_validations=(5, timedelta(hours=1)),
    ),
    "letsencrypt-staging": Limits(
        exact_set=(30_000, timedelta(days=7)),
        registered_domain=(30_000, timedelta(days=7)),
        new_orders=(1_500, timedelta(hours=3)),
        failed_validations=(200, timedelta(hours=1)),
    ),
    "off": None,
}


@functools.lru_cache(maxsize=1)
def _extractor() -> object:
    import tldextract

    urls = (f"file://{SYSTEM_PSL}",) if os.path.exists(SYSTEM_PSL) else ()
    return tldextract.TLDExtract(suffix_list_urls=urls, cache_dir=None, fallback_to_snapshot=True)


@functools.lru_cache(maxsize=65536)  # (ten thousand sites' names fit)
def registered_domain(name: str) -> str:
    """``www.example.co.uk`` -> ``example.co.uk``; names under no public suffix use their last two labels."""
    result = _extractor()(name)  # type: ignore[operator]
    found = getattr(result, "top_domain_under_public_suffix", None)
    if found is None:
        found = result.registered_domain if result.suffix else ""
    if found:
        return str(found)
    return ".".join(name.split(".")[-2:])


@dataclass(frozen=True)
class Verdict:
    limit: str          # "" when allowed
    used: int = 0
    amount: int = 0
    frees_at: datetime | None = None

    @property
    def allowed(self) -> bool:
        return not self.limit

    def __str__(self) -> str:
        if self.allowed:
            return "within limits"
        if not self.amount:
            return f"the CA's {self.limit} limit was hit; waiting until {self.frees_at:%Y-%m-%d %H:%M:%S} UTC"
        return (f"would exceed the CA's {self.limit} limit ({self.used}/{self.amount} used); "
                f"frees up at {self.frees_at:%Y-%m-%d %H:%M} UTC")


def _window(times: Sequence[datetime], amount: int, window: timedelta, now: datetime) -> tuple[int, datetime | None]:
    recent = sorted(t for t in times if now - t < window)
    if len(recent) < amount:
        return len(recent), None
    # The (len - amount + 1)-th oldest must leave the window before one more fits.
    return len(recent), recent[len(recent) - amount] + window


def check(
    limits: Limits | None,
    domains: Iterable[str],
    renewal_of_same_set: bool,
    issued: Sequence[tuple[datetime, str, tuple[str, ...]]],
    orders: Sequence[tuple[datetime, str]],
    failed_validations: Sequence[tuple[datetime, str]],
    now: datetime,
) -> Verdict:
    """May one more order for ``domains`` be sent now?"""
    if limits is None:
        return Verdict("")
    names = frozenset(domains)
    checks: list[tuple[str, list[datetime], tuple[int, timedelta]]] = [
        ("certificates per exact set of names", [t for t, _, d in issued if frozenset(d) == names],
         limits.exact_set),
    ]
    for name in sorted(names):
        checks.append((f"failed validations for {name}", [t for t, d in failed_validations if d == name],
                       limits.failed_validations))
    if not renewal_of_same_set:
        checks.append(("new orders per account", [t for t, _ in orders], limits.new_orders))
        for reg in sorted({registered_domain(n) for n in names}):
            times = [t for t, _, d in issued if any(registered_domain(n) == reg for n in d)]
            checks.append((f"certificates per registered domain {reg}", times, limits.registered_domain))
    for label, times, (amount, window) in checks:
        used, frees = _window(times, amount, window, now)
        if frees is not None:
            return Verdict(label, used, amount, frees)
    return Verdict("")


def remaining(
    limits: Limits | None,
    registered: Iterable[str],
    issued: Sequence[tuple[datetime, str, tuple[str, ...]]],
    orders: Sequence[tuple[datetime, str]],
    now: datetime,
) -> dict[str, int]:
    """Budgets left, for status and metrics: new orders, and per registered domain."""
    if limits is None:
        return {}
    amount, window = limits.new_orders
    out = {"new_orders": max(0, amount - sum(1 for t, _ in orders if now - t < window))}
    amount, window = limits.registered_domain
    for reg in sorted(set(registered)):
        used = sum(1 for t, _, d in issued if now - t < window and any(registered_domain(n) == reg for n in d))
        out[f"registered_domain:{reg}"] = max(0, amount - used)
    return out


def _free_at(times: list[datetime], amount: int, window: timedelta, at: datetime) -> datetime:
    """The earliest time from ``at`` with room for one more (``times`` sorted, none after ``at``)."""
    recent = len(times) - bisect_right(times, at - window)
    return at if recent < amount else times[len(times) - amount] + window


def project(
    limits: Limits | None,
    wanted: Sequence[tuple[str, Sequence[str]]],
    issued: Sequence[tuple[datetime, str, tuple[str, ...]]],
    orders: Sequence[tuple[datetime, str]],
    now: datetime,
    paused_until: datetime | None = None,
) -> dict[str, tuple[datetime, str]]:
    """When each new order of ``wanted`` ((key, names), in the order they would be sent) can be sent
    at the earliest, if each goes as soon as the budgets allow and every one is issued: key ->
    (time, the limit that holds it back until then, or "").

    The new-orders budget of the account and the per-registered-domain budget, over sliding
    windows that start from the ledger (``check``'s rules); renewals of the same names are not
    counted by those limits and are not passed here. Orders of one registered domain go in the
    given order; a domain out of budget does not hold back the others.
    """
    start = max(now, paused_until) if paused_until is not None else now
    if limits is None or not wanted:
        return {key: (start, "") for key, _ in wanted}
    o_amount, o_window = limits.new_orders
    d_amount, d_window = limits.registered_domain
    regs_of = {key: tuple(sorted({registered_domain(n) for n in names})) for key, names in wanted}
    needed = {r for regs in regs_of.values() for r in regs}
    order_times = sorted(t for t, _ in orders if now - t < o_window and t <= now)
    by_reg: dict[str, list[datetime]] = {r: [] for r in needed}
    for t, _, names in issued:
        if now - t < d_window and t <= now:
            for reg in {registered_domain(n) for n in names} & needed:
                by_reg[reg].append(t)
    for times in by_reg.values():
        times.sort()
    groups: dict[tuple[str, ...], deque[str]] = {}
    for key, _ in wanted:
        groups.setdefault(regs_of[key], deque()).append(key)
    held: dict[tuple[str, ...], str] = {}  # group -> the limit that held it back last
    out: dict[str, tuple[datetime, str]] = {}
    at = start
    while groups:
        soonest: datetime | None = None
        for regs in list(groups):
            queue = groups[regs]
            while queue:
                t_order = _free_at(order_times, o_amount, o_window, at)
                t_reg, reg = max(((_free_at(by_reg[r], d_amount, d_window, at), r) for r in regs),
                                 default=(at, ""))
                t = max(t_order, t_reg)
                if t > at:
                    held[regs] = ("new orders per account" if t_order >= t_reg
                                  else f"certificates per registered domain {reg}")
                    soonest = t if soonest is None else min(soonest, t)
                    break
                out[queue.popleft()] = (at, held.get(regs, "") if at > start else "")
                order_times.append(at)
                for r in regs:
                    by_reg[r].append(at)
            if not queue:
                del groups[regs]
        if groups:
            assert soonest is not None and soonest > at
            at = soonest
    return out
