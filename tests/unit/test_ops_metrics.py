"""Prometheus metrics from events and pass snapshots (no server, no Docker)."""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from sidecar.core.events import Event, Kind, PassSnapshot, SiteStatus
from sidecar.ops.metrics import Metrics

from .builders import NOW

DAY = timedelta(days=1)


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return _samples(m).get((name, tuple(sorted(labels.items()))))


def _status(name: str, state: str = "ok", **kw: object) -> SiteStatus:
    defaults: dict[str, object] = {
        "domains": (name,), "source": f"container {name}", "state": state, "reason": "", "live": True,
    }
    defaults.update(kw)
    return SiteStatus(name=name, **defaults)  # type: ignore[arg-type]


def _snap(*sites: SiteStatus, at: datetime = NOW, problems: tuple[str, ...] = (),
          budgets: dict[str, int] | None = None) -> PassSnapshot:
    return PassSnapshot(at, list(sites), list(problems), budgets or {})


def test_certificate_gauges_follow_the_snapshot_and_vanish_with_the_site() -> None:
    m = Metrics()
    a = _status("a.example.com", not_before=NOW - 10 * DAY, not_after=NOW + 80 * DAY, next_renewal=NOW + 50 * DAY)
    b = _status("b.example.com", state="wait", failures=2, next_attempt=NOW + timedelta(minutes=10))
    m.snapshot(_snap(a, b, problems=("container x: bad label",)))

    assert _value(m, "nginx_acme_certificate_not_after_timestamp_seconds", site="a.example.com") == \
        (NOW + 80 * DAY).timestamp()
    assert _value(m, "nginx_acme_certificate_next_renewal_timestamp_seconds", site="a.example.com") == \
        (NOW + 50 * DAY).timestamp()
    assert _value(m, "nginx_acme_certificate_next_renewal_timestamp_seconds", site="b.example.com") == \
        (NOW + timedelta(minutes=10)).timestamp()
    # Without a success seen by this process, the last success is the certificate's notBefore.
    assert _value(m, "nginx_acme_certificate_last_success_timestamp_seconds", site="a.example.com") == \
        (NOW - 10 * DAY).timestamp()
    assert _value(m, "nginx_acme_certificate_not_after_timestamp_seconds", site="b.example.com") is None
    assert _value(m, "nginx_acme_certificate_consecutive_failures", site="b.example.com") == 2
    assert _value(m, "nginx_acme_sites", state="ok") == 1
    assert _value(m, "nginx_acme_sites", state="wait") == 1
    assert _value(m, "nginx_acme_sites", state="issue") == 0
    assert _value(m, "nginx_acme_problems") == 1
    assert _value(m, "nginx_acme_docker_up") == 1
    assert _value(m, "nginx_acme_last_pass_timestamp_seconds") == NOW.timestamp()

    m.snapshot(_snap(b, at=NOW + DAY))
    assert _value(m, "nginx_acme_certificate_not_after_timestamp_seconds", site="a.example.com") is None
    assert _value(m, "nginx_acme_certificate_last_success_timestamp_seconds", site="a.example.com") is None
    assert _value(m, "nginx_acme_sites", state="ok") == 0


def test_issuance_failure_reload_and_docker_events_are_counted() -> None:
    m = Metrics()
    m.event(Event(Kind.CERT_ISSUED, NOW, "a.example.com", details={"duration": 3.2, "action": "issue"}))
    m.event(Event(Kind.CERT_RENEWED, NOW + DAY, "a.example.com", details={"duration": 4.0, "action": "renew"}))
    for _ in range(3):
        m.event(Event(Kind.CERT_FAILED, NOW, "b.example.com", details={"failure": "validation", "duration": 1.5}))
    m.event(Event(Kind.CERT_FAILED, NOW, "b.example.com", details={"failure": "rate-limited"}))
    m.event(Event(Kind.RELOAD, NOW))
    m.event(Event(Kind.RELOAD, NOW))
    m.event(Event(Kind.NGINX_REJECTED, NOW, "c.example.com"))
    m.event(Event(Kind.DOCKER_UNAVAILABLE, NOW, message="connection refused"))

    assert _value(m, "nginx_acme_certificate_failures_total", site="b.example.com", kind="validation") == 3
    assert _value(m, "nginx_acme_certificate_failures_total", site="b.example.com", kind="rate-limited") == 1
    assert _value(m, "nginx_acme_certificates_obtained_total", action="issue") == 1
    assert _value(m, "nginx_acme_certificates_obtained_total", action="renew") == 1
    assert _value(m, "nginx_acme_certbot_duration_seconds_count", outcome="success") == 2
    assert _value(m, "nginx_acme_certbot_duration_seconds_sum", outcome="success") == 7.2
    assert _value(m, "nginx_acme_certbot_duration_seconds_count", outcome="failure") == 3
    assert _value(m, "nginx_acme_certbot_duration_seconds_bucket", outcome="failure", le="2.0") == 3
    assert _value(m, "nginx_acme_nginx_reloads_total") == 2
    assert _value(m, "nginx_acme_nginx_rejections_total") == 1
    assert _value(m, "nginx_acme_docker_up") == 0

    # A success seen by this process wins over the notBefore guess.
    m.snapshot(_snap(_status("a.example.com", not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY)))
    assert _value(m, "nginx_acme_certificate_last_success_timestamp_seconds", site="a.example.com") == \
        (NOW + DAY).timestamp()
    assert _value(m, "nginx_acme_docker_up") == 1


def test_rate_limit_budgets_become_labelled_gauges() -> None:
    m = Metrics()
    m.snapshot(_snap(budgets={"new_orders": 297, "registered_domain:example.com": 48, "registered_domain:b.org": 50}))
    assert _value(m, "nginx_acme_rate_limit_remaining", limit="new_orders", scope="") == 297
    assert _value(m, "nginx_acme_rate_limit_remaining", limit="registered_domain", scope="example.com") == 48
    m.snapshot(_snap(budgets={"new_orders": 296}))
    assert _value(m, "nginx_acme_rate_limit_remaining", limit="registered_domain", scope="example.com") is None
    assert _value(m, "nginx_acme_rate_limit_remaining", limit="new_orders", scope="") == 296


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.event(Event(Kind.RELOAD, NOW))
    assert _value(a, "nginx_acme_nginx_reloads_total") == 1
    assert _value(b, "nginx_acme_nginx_reloads_total") == 0


def test_domain_conflicts_are_counted_per_site_while_they_last() -> None:
    m = Metrics()
    evil = "container evil: domain b.example.com belongs to container app-b-1 (Compose service demo/app-b); refused"
    evil2 = "container evil2: domain b.example.com belongs to container app-b-1 (Compose service demo/app-b); refused"
    other = "container x: domain a.example.com is already served by container a with other domains (a.example.com)"
    for text, held in ((evil, "b.example.com"), (evil2, "b.example.com"), (other, "a.example.com")):
        m.event(Event(Kind.INPUT_PROBLEM, NOW, "", text))
        m.event(Event(Kind.DOMAIN_CONFLICT, NOW, held, text))
    m.snapshot(_snap(problems=(evil, evil2, other, "container y label acme.port: not a port")))
    assert _value(m, "nginx_acme_domain_conflicts", site="b.example.com") == 2
    assert _value(m, "nginx_acme_domain_conflicts", site="a.example.com") == 1
    assert _value(m, "nginx_acme_problems") == 4

    # One intruder stops, the other conflict is resolved: their series follow.
    m.snapshot(_snap(problems=(evil2,), at=NOW + DAY))
    assert _value(m, "nginx_acme_domain_conflicts", site="b.example.com") == 1
    assert _value(m, "nginx_acme_domain_conflicts", site="a.example.com") is None
    m.snapshot(_snap(at=NOW + 2 * DAY))
    assert _value(m, "nginx_acme_domain_conflicts", site="b.example.com") is None

    # A problem that is not a conflict never counts as one.
    m.event(Event(Kind.INPUT_PROBLEM, NOW, "", "container y label acme.port: not a port"))
    m.snapshot(_snap(problems=("container y label acme.port: not a port",), at=NOW + 3 * DAY))
    assert _value(m, "nginx_acme_domain_conflicts", site="b.example.com") is None
