"""Prometheus metrics, fed by the reconciler's events and pass snapshots.

An ``Observer``: it never touches Docker, certbot or files, and it owns its
``CollectorRegistry`` (no global state, so tests can make as many as they like).
Per-site series disappear when the site does.

==============================================================  =========  ===================================
metric                                                          type       labels
==============================================================  =========  ===================================
nginx_acme_certificate_not_after_timestamp_seconds              gauge      site
nginx_acme_certificate_not_before_timestamp_seconds             gauge      site
nginx_acme_certificate_next_renewal_timestamp_seconds           gauge      site
nginx_acme_certificate_last_success_timestamp_seconds           gauge      site
nginx_acme_certificate_consecutive_failures                     gauge      site
nginx_acme_certificate_failures_total                           counter    site, kind
nginx_acme_certificates_obtained_total                          counter    action (issue, renew, ...)
nginx_acme_certbot_duration_seconds                             histogram  outcome (success, failure)
nginx_acme_nginx_reloads_total                                  counter
nginx_acme_nginx_rejections_total                               counter
nginx_acme_rate_limit_remaining                                 gauge      limit, scope
nginx_acme_sites                                                gauge      state
nginx_acme_problems                                             gauge
nginx_acme_domain_conflicts                                     gauge      site
nginx_acme_conf_set_aside                                       gauge      file
nginx_acme_last_pass_timestamp_seconds                          gauge
nginx_acme_docker_up                                            gauge
nginx_acme_consumer_signals_total                               counter    site, container
nginx_acme_consumer_hook_failures_total                         counter    site, container
==============================================================  =========  ===================================
"""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sidecar.core.events import Event, Kind, PassSnapshot

NS = "nginx_acme"
STATES = ("ok", "issue", "expand", "rekey", "renew", "wait")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.per_site = SiteGauges()
        r.register(self.per_site)
        self.failures = Counter(f"{NS}_certificate_failures", "Failed certificate requests, by kind of failure.",
                                ["site", "kind"], registry=r)
        self.obtained = Counter(f"{NS}_certificates_obtained", "Certificates obtained, by action.", ["action"],
                                registry=r)
        self.certbot_duration = Histogram(f"{NS}_certbot_duration_seconds",
                                          "Duration of certificate requests (certbot run, preflight included).",
                                          ["outcome"], registry=r,
                                          buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
        self.reloads = Counter(f"{NS}_nginx_reloads", "nginx reloads.", registry=r)
        self.rejections = Counter(f"{NS}_nginx_rejections", "Site configurations nginx -t rejected.", registry=r)
        self.budget = Gauge(f"{NS}_rate_limit_remaining",
                            "Requests left in the CA's rate-limit window (limit: new_orders, registered_domain).",
                            ["limit", "scope"], registry=r)
        self.sites = Gauge(f"{NS}_sites", "Desired sites, by planner state.", ["state"], registry=r)
        self.problems = Gauge(f"{NS}_problems", "Input problems (bad labels, sites file entries, conflicts).",
                              registry=r)
        self.last_pass = Gauge(f"{NS}_last_pass_timestamp_seconds", "When the last reconcile pass finished.",
                               registry=r)
        self.conflicts = Gauge(f"{NS}_domain_conflicts",
                               "Claims on a site's domains refused now because another owner holds them "
                               "(containers of another service without a shared acme.group label).",
                               ["site"], registry=r)
        self.set_aside = Gauge(f"{NS}_conf_set_aside",
                               "1 for each hand-written conf.d file set aside because nginx rejects it.",
                               ["file"], registry=r)
        self._set_aside: set[str] = set()
        self.consumer_signals = Counter(f"{NS}_consumer_signals",
                                        "Consumer containers told of a new certificate (acme.consumer.signal).",
                                        ["site", "container"], registry=r)
        self.consumer_failures = Counter(f"{NS}_consumer_hook_failures",
                                         "Failed attempts to tell a consumer container of a new certificate.",
                                         ["site", "container"], registry=r)
        self.node_bundle = Gauge(f"{NS}_node_bundle_version",
                                 "Docker Swarm: the bundle version each node's nginx serves.", ["node"], registry=r)
        self.node_ok = Gauge(f"{NS}_node_bundle_ok",
                             "Docker Swarm: 1 if the node applied the latest bundle it was offered, else 0.",
                             ["node"], registry=r)
        self.docker_up = Gauge(f"{NS}_docker_up", "1 if the Docker API answered on the last pass.", registry=r)
        for state in STATES:
            self.sites.labels(state).set(0)
        self._lock = threading.Lock()
        self._budgets: set[tuple[str, str]] = set()
        # domain_conflict events still current: their problem text -> the site holding the domain
        self._conflicts: dict[str, str] = {}
        self._conflict_sites: set[str] = set()

    # -- Observer --------------------------------------------------------------
    def event(self, event: Event) -> None:
        d = event.details
        if event.kind is Kind.NODE_BUNDLE:
            node = str(d.get("hostname") or d.get("node") or "?")
            self.node_bundle.labels(node).set(float(d.get("version") or 0))
            self.node_ok.labels(node).set(1.0 if d.get("state") == "applied" else 0.0)
            return
        if event.kind in (Kind.CERT_ISSUED, Kind.CERT_RENEWED):
            self.per_site.succeeded(event.site, event.at.timestamp())
            self.obtained.labels(str(d.get("action") or event.kind.value)).inc()
            self._observe_duration("success", d.get("duration"))
        elif event.kind == Kind.CERT_FAILED:
            self.failures.labels(event.site, str(d.get("failure") or "unknown")).inc()
            self._observe_duration("failure", d.get("duration"))
        elif event.kind == Kind.RELOAD:
            self.reloads.inc()
        elif event.kind == Kind.NGINX_REJECTED:
            self.rejections.inc()
        elif event.kind == Kind.DOCKER_UNAVAILABLE:
            self.docker_up.set(0)
        elif event.kind == Kind.CONSUMER_SIGNALLED:
            self.consumer_signals.labels(event.site, str(d.get("container") or "")).inc()
        elif event.kind == Kind.CONSUMER_FAILED:
            self.consumer_failures.labels(event.site, str(d.get("container") or "")).inc()
        elif event.kind == Kind.DOMAIN_CONFLICT:
            with self._lock:
                self._conflicts[event.message] = event.site

    def snapshot(self, snap: PassSnapshot) -> None:
        self.last_pass.set(snap.at.timestamp())
        self.docker_up.set(1)
        self.problems.set(len(snap.problems))
        self._count_conflicts(set(snap.problems))
        for name in self._set_aside - set(snap.set_aside):
            self.set_aside.remove(name)
        for name in snap.set_aside:
            self.set_aside.labels(name).set(1)
        self._set_aside = set(snap.set_aside)
        counts = Tally(s.state for s in snap.sites)
        for state in set(STATES) | set(counts):
            self.sites.labels(state).set(counts.get(state, 0))
        self.per_site.update({
            s.name: (s.not_after.timestamp() if s.not_after is not None else None,
                     s.not_before.timestamp() if s.not_before is not None else None,
                     (s.next_renewal or s.next_attempt or snap.at).timestamp(),
                     float(s.failures))
            for s in snap.sites})
        budgets = {_split_budget(k): v for k, v in snap.budgets.items()}
        with self._lock:
            for old in self._budgets - set(budgets):
                try:
                    self.budget.remove(*old)
                except KeyError:
                    pass
            self._budgets = set(budgets)
        for (limit, scope), remaining in budgets.items():
            self.budget.labels(limit, scope).set(remaining)

    def _count_conflicts(self, problems: set[str]) -> None:
        """A conflict is said once (its event) and lasts while its problem is in the snapshots."""
        with self._lock:
            self._conflicts = {text: site for text, site in self._conflicts.items() if text in problems}
            per_site = Tally(self._conflicts.values())
            gone = self._conflict_sites - set(per_site)
            self._conflict_sites = set(per_site)
        for site in gone:
            try:
                self.conflicts.remove(site)
            except KeyError:
                pass
        for site, count in per_site.items():
            self.conflicts.labels(site).set(count)

    # -- exposition ------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _observe_duration(self, outcome: str, duration: object) -> None:
        if isinstance(duration, (int, float)) and duration >= 0:
            self.certbot_duration.labels(outcome).observe(float(duration))


class SiteGauges(Collector):
    """The per-site gauges, kept as one row of numbers per site and made into samples when scraped:
    five labelled ``Gauge`` children per site cost 30 MB at ten thousand sites, these rows 2 MB."""

    FAMILIES = (
        (f"{NS}_certificate_not_after_timestamp_seconds", "When the site's certificate expires (notAfter), Unix time."),
        (f"{NS}_certificate_not_before_timestamp_seconds",
         "When the site's certificate became valid (notBefore), Unix time."),
        (f"{NS}_certificate_next_renewal_timestamp_seconds",
         "When the next certificate request for the site is due (now if due), Unix time."),
        (f"{NS}_certificate_last_success_timestamp_seconds",
         "Last successful issuance or renewal, Unix time (until the first one after a restart: the "
         "certificate's notBefore)."),
        (f"{NS}_certificate_consecutive_failures", "Failed certificate requests since the last success."),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # site -> (not_after, not_before, next_renewal, consecutive failures), from the last pass
        self._rows: dict[str, tuple[float | None, float | None, float, float]] = {}
        self._succeeded: dict[str, float] = {}  # last success told by an event, not guessed from notBefore

    def update(self, rows: dict[str, tuple[float | None, float | None, float, float]]) -> None:
        """The sites of a pass; a site no longer there loses its series."""
        with self._lock:
            self._rows = rows
            self._succeeded = {k: v for k, v in self._succeeded.items() if k in rows}

    def succeeded(self, site: str, at: float) -> None:
        with self._lock:
            self._succeeded[site] = at

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, text, labels=["site"]) for name, text in self.FAMILIES]

    def collect(self) -> list[GaugeMetricFamily]:
        with self._lock:
            rows, succeeded = self._rows, dict(self._succeeded)
        not_after, not_before, next_renewal, last_success, failures = families = self.describe()
        for site, (after, before, due, failed) in rows.items():
            if after is not None:
                not_after.add_metric([site], after)
            if before is not None:
                not_before.add_metric([site], before)
                if site not in succeeded:
                    last_success.add_metric([site], before)
            next_renewal.add_metric([site], due)
            failures.add_metric([site], failed)
        for site, at in succeeded.items():
            last_success.add_metric([site], at)
        return families


def _split_budget(key: str) -> tuple[str, str]:
    """``registered_domain:example.com`` -> (``registered_domain``, ``example.com``); ``new_orders`` -> (…, "")."""
    limit, _, scope = key.partition(":")
    return limit, scope
