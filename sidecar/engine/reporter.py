"""The status reporter: what the loop tells people, once per change.

Events go to the observers (status board, metrics, alerts); the same facts go to the
log as one line each, said when they change rather than on every pass; the status
file in ``STATE_DIR`` is rewritten when its content changes (or every 30 seconds,
for the health check's freshness).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from sidecar.core import names
from sidecar.core.health import assess
from sidecar.core.events import Event, Kind, Observers, PassSnapshot, SiteStatus
from sidecar.core.redact import redact, redact_doc
from sidecar.core.model import Certificate, DesiredState, ProblemKind, Site
from sidecar.core.planner import Action, Attempt
from sidecar.core.schedule import Work
from sidecar.core.settings import Settings
from sidecar.state import files

log = logging.getLogger("sidecar")

STATUS_FILE = "status.json"
STATUS_MIN_INTERVAL = 5.0  # seconds between status file writes inside one pass
STATUS_REFRESH = 30.0  # seconds: the status file is rewritten at least this often while passes run
LONG_WAIT_REPEAT = timedelta(hours=6)
LOG_EACH_MAX = 20  # sites one pass says the same thing about, each on its own line; more: one line for all


class Lines:
    """The per-site lines of one kind in one pass. Up to ``LOG_EACH_MAX`` are logged each as it
    is; more (a first start with ten thousand sites) become one summary line, and each site's
    own line goes to the debug log. The events stay one per site."""

    def __init__(self, what: str) -> None:
        self.what = what  # "added", "live", ...: the summary says "<n> sites <what>"
        self.lines: list[tuple[str, str, tuple[object, ...]]] = []

    def add(self, site: str, fmt: str, *args: object) -> None:
        self.lines.append((site, fmt, args))

    def say(self) -> None:
        if len(self.lines) <= LOG_EACH_MAX:
            for _, fmt, args in self.lines:
                log.info(fmt, *args)
            return
        for _, fmt, args in self.lines:
            log.debug(fmt, *args)
        shown = ", ".join(site for site, _, _ in self.lines[:5])
        log.info("%d sites %s: %s and %d more (GET /status lists them; LOG_LEVEL=debug says each)",
                 len(self.lines), self.what, shown, len(self.lines) - 5)


@dataclass
class _Said:
    """What was said already, so each change is said once."""

    problems: set[str] = field(default_factory=set)
    conditions: set[str] = field(default_factory=set)
    sites: dict[str, Site] = field(default_factory=dict)
    postponed: dict[str, datetime | None] = field(default_factory=dict)
    plan: dict[str, tuple[tuple[str, datetime | None], datetime]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    status_written: float = float("-inf")


class Reporter:
    def __init__(self, settings: Settings, clock: Callable[[], datetime], observers: Observers | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.observers = observers or Observers()
        self.said = _Said()

    @property
    def sites(self) -> dict[str, Site]:
        """The sites of the last pass."""
        return self.said.sites

    def emit(self, kind: Kind, site: str = "", message: str = "", **details: object) -> None:
        """One event to every observer, secrets redacted (its text may quote a certbot error)."""
        self.observers.event(Event(kind, self.clock(), site, redact(message), redact_doc(dict(details))))

    def problem(self, key: str, line: str) -> None:
        """A condition outside any site (no nginx container, ...): logged once until ``resolved``."""
        if key not in self.said.conditions:
            log.error("%s", line)
            self.said.conditions.add(key)

    def resolved(self, key: str) -> None:
        self.said.conditions.discard(key)

    def changes(self, state: DesiredState) -> None:
        """New and resolved input problems, sites added, changed and removed."""
        now_problems = {str(p) for p in state.problems}
        for problem in state.problems:
            if str(problem) not in self.said.problems:
                log.log(logging.WARNING if problem.kind is ProblemKind.WARNING else logging.ERROR, "%s", problem)
                self.emit(Kind.INPUT_PROBLEM, "", str(problem), source=problem.source, error=problem.message)
                if problem.kind is ProblemKind.DOMAIN_CONFLICT:
                    self.emit(Kind.DOMAIN_CONFLICT, problem.site, str(problem), source=problem.source,
                              error=problem.message)
        for p in sorted(self.said.problems - now_problems):
            log.info("resolved: %s", p)
        self.said.problems = now_problems
        current = state.by_name()
        added = Lines("added")
        for name, site in current.items():
            before = self.said.sites.get(name)
            if before is None:
                added.add(name, "site %s: added from %s (%s -> %s)", name, site.source, ", ".join(site.domains),
                          ", ".join(u.url for u in site.upstreams))
                self.emit(Kind.SITE_ADDED, name, f"added from {site.source}", domains=list(site.domains))
            elif (before.domains, before.upstreams, before.options) != (site.domains, site.upstreams, site.options):
                log.info("site %s: changed (%s -> %s)", name, ", ".join(site.domains),
                         ", ".join(u.url for u in site.upstreams))
                self.emit(Kind.SITE_CHANGED, name, "changed", domains=list(site.domains),
                          upstreams=[u.url for u in site.upstreams])
        added.say()
        for name, site in self.said.sites.items():
            if name not in current:
                log.info("site %s: removed (%s is gone); its certificate stays in %s for reuse",
                         name, site.source, self.settings.certs_dir / "live" / name)
                self.emit(Kind.SITE_REMOVED, name, f"{site.source} is gone")
        self.said.sites = dict(current)

    def postponements(self, work: Work) -> None:
        """Say once per new "frees at" that a site waits for a CA budget."""
        for name, verdict in work.postponed.items():
            if self.said.postponed.get(name) != verdict.frees_at:
                action = next((d.action.value for d in work.plan.to_run if d.site.name == name), "")
                log.warning("site %s: %s certificate postponed: %s", name, action, verdict)
                self.emit(Kind.CERT_POSTPONED, name, str(verdict), until=verdict.frees_at, why=verdict.limit)
        self.said.postponed = {n: v.frees_at for n, v in work.postponed.items()}

    def plan(self, work: Work) -> None:
        """Say once why nothing happens for a site (and repeat long waits every 6 hours)."""
        now = self.clock()
        planned = Lines("with a valid certificate and its renewal planned")
        for d in work.plan.decisions:
            key = (d.action.value, d.at)
            seen = self.said.plan.get(d.site.name)
            if d.action == Action.OK and d.at is not None and (seen is None or seen[0] != key):
                planned.add(d.site.name, "site %s: certificate %s; renewal planned %s UTC", d.site.name, d.reason,
                            f"{d.at:%Y-%m-%d %H:%M:%S}")
            elif d.action == Action.WAIT and d.at is not None and (
                    seen is None or seen[0] != key or now - seen[1] >= LONG_WAIT_REPEAT):
                log.info("site %s: waiting until %s UTC before the next attempt (%s)", d.site.name,
                         f"{d.at:%Y-%m-%d %H:%M:%S}", d.reason)
            else:
                continue
            self.said.plan[d.site.name] = (key, now)
        planned.say()

    def status(self, state: DesiredState, work: Work | None, lineages: Mapping[str, Certificate],
               live: set[str], attempts: Mapping[str, Attempt], budgets: dict[str, int],
               degraded: tuple[str, ...] = (), set_aside: Mapping[str, str] | None = None,
               final: bool = True) -> None:
        """Publish the pass snapshot to the observers and keep the status file current (while a pass
        is not ``final``, written at most every ``STATUS_MIN_INTERVAL`` s: 10,000 rows take a while)."""
        decisions = work.plan.decisions if work is not None else ()
        statuses = []
        for d in decisions:
            cert = lineages.get(d.site.name)
            attempt = attempts.get(d.site.name)
            statuses.append(SiteStatus(
                name=d.site.name, domains=d.site.domains, source=d.site.source, state=d.action.value,
                reason=d.reason, live=names.site_filename(d.site.name) in live,
                not_after=cert.not_after if cert else None,
                not_before=cert.not_before if cert else None,
                next_renewal=d.at if d.action == Action.OK else None,
                next_attempt=d.at if d.action == Action.WAIT else None,
                last_error=attempt.last_error if attempt else "",
                failures=attempt.failures if attempt else 0,
                issuer=cert.issuer if cert else "",
            ))
        problems = sorted(str(p) for p in state.problems)
        self.observers.snapshot(PassSnapshot(self.clock(), statuses, problems, budgets, degraded, dict(set_aside or {})))
        content: dict[str, Any] = {
            "acme_server": self.settings.acme_server,
            "sites": [{"name": st.name, "domains": list(st.domains), "source": st.source,
                       "upstreams": [u.url for u in d.site.upstreams], "state": st.state, "reason": st.reason,
                       "at": names.iso(d.at), "live": st.live} for st, d in zip(statuses, decisions)],
            "problems": problems,
            "rate_limit_budgets": budgets,
            "degraded": list(degraded),
            "set_aside": dict(set_aside or {}),
        }
        now = time.monotonic()
        if content == self.said.status and now - self.said.status_written < STATUS_REFRESH:
            return
        if not final and (self.said.status_written == float("-inf")
                          or now - self.said.status_written < STATUS_MIN_INTERVAL):
            return  # (the observers have it already; the file is for when the status server does not answer)
        try:
            files.atomic_write(self.settings.state_dir / STATUS_FILE,
                               json.dumps(redact_doc({"updated": self.clock().isoformat(), **content}))
                               + "\n")
            self.said.status, self.said.status_written = content, now
        except OSError as exc:
            log.warning("cannot write status file: %s", exc)


def health(settings: Settings) -> tuple[bool, dict[str, Any]]:
    """From the status file (when the status server does not answer): is its last pass recent?"""
    path = settings.state_dir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        updated: datetime | None = datetime.fromisoformat(data["updated"])
        why = ""
    except (OSError, ValueError, KeyError) as exc:
        updated, data, why = None, {}, f"no status yet ({exc})"
    return assess(updated, len(data.get("sites", [])), True, "", names.utcnow(), starting=why,
                  degraded=data.get("degraded") or ())
