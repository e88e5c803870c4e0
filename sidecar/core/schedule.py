"""The planning step: snapshot + ledger + clock -> everything the executors will do. Pure.

    plan(sites, lineages, attempts, ...)      what each certificate needs (planner)
    + admit(decision, limits, usage, now)     whether the CA's budgets allow it now (rate limits)
    = Work                                    what runs, what waits for a budget and until when

``/plan`` shows a ``Work`` computed exactly as the loop computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from sidecar.core import ratelimits
from sidecar.core.model import Certificate, Site
from sidecar.core.planner import Action, Attempt, Decision, Plan, Policy, plan


@dataclass(frozen=True)
class Usage:
    """What was sent to the CA recently (from the ledger), for its rate limits."""

    issued: tuple[tuple[datetime, str, tuple[str, ...]], ...] = ()
    orders: tuple[tuple[datetime, str], ...] = ()
    failed_validations: tuple[tuple[datetime, str], ...] = ()
    # The CA refused new orders for the whole account until then (a 429 on new orders).
    account_paused_until: datetime | None = None


@dataclass(frozen=True)
class Work:
    plan: Plan
    # certbot runs the budgets allow now, in the planner's order
    runnable: tuple[Decision, ...] = ()
    # site -> why its run waits for a budget, and until when
    postponed: Mapping[str, ratelimits.Verdict] = field(default_factory=dict)
    forced: frozenset[str] = frozenset()
    # site -> (when its order fits the CA's budgets, the limit it waits for): new orders the budgets
    # allow one by one but not all at once (the runs before it in this plan use them up)
    queued: Mapping[str, tuple[datetime, str]] = field(default_factory=dict)
    # when the last certificate this plan asks for can be requested under the CA's limits
    last_request_at: datetime | None = None

    @property
    def next_wakeup(self) -> datetime | None:
        times = [t for t in [self.plan.next_wakeup, *(v.frees_at for v in self.postponed.values()),
                             *(t for t, _ in self.queued.values())] if t]
        return min(times) if times else None


def admit(decision: Decision, limits: ratelimits.Limits | None, usage: Usage, now: datetime) -> ratelimits.Verdict:
    """May this certbot run send its order now? Renewals of the same names have their own budget."""
    renewal = decision.action in (Action.RENEW, Action.REKEY)
    verdict = ratelimits.check(limits, decision.site.domains, renewal, usage.issued, usage.orders,
                               usage.failed_validations, now)
    paused = usage.account_paused_until
    if verdict.allowed and not renewal and paused is not None and now < paused:
        # The CA refused new orders for the whole account: asking for another site would only add 429s.
        return ratelimits.Verdict("new orders per account (reported by the CA)", 0, 0, paused)
    return verdict


def schedule(
    sites: tuple[Site, ...],
    lineages: Mapping[str, Certificate],
    attempts: Mapping[str, Attempt],
    usage: Usage,
    policy: Policy,
    limits: ratelimits.Limits | None,
    now: datetime,
    ari_windows: Mapping[str, tuple[datetime, datetime]] | None = None,
    forced: frozenset[str] = frozenset(),
) -> Work:
    the_plan = plan(sites, lineages, attempts, policy, now, ari_windows, forced=forced)
    runnable: list[Decision] = []
    postponed: dict[str, ratelimits.Verdict] = {}
    for decision in the_plan.to_run:
        verdict = admit(decision, limits, usage, now)
        if verdict.allowed:
            runnable.append(decision)
        else:
            postponed[decision.site.name] = verdict
    # Each order allowed alone is not all of them allowed together: the new orders go out one by
    # one as the budgets allow (at ten thousand sites the CA's limits, not the machine, set the pace).
    new = [(d.site.name, d.site.domains) for d in the_plan.to_run
           if d.action not in (Action.RENEW, Action.REKEY) and d.site.name not in postponed]
    times = ratelimits.project(limits, new, usage.issued, usage.orders, now, usage.account_paused_until)
    queued = {name: times[name] for name, _ in new if times[name][0] > now}
    runnable = [d for d in runnable if d.site.name not in queued]
    ends = [*(t for t, _ in times.values()), *(v.frees_at for v in postponed.values() if v.frees_at),
            *(now for d in runnable)]
    return Work(the_plan, tuple(runnable), postponed, forced, queued, max(ends) if ends else None)
