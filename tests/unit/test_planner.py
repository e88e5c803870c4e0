from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from sidecar.core.model import Certificate
from sidecar.core.planner import Action, Attempt, Decision, Policy, backoff_delay, decide, plan, renewal_time

from .builders import NOW, cert, site

POLICY = Policy(key_type="ecdsa", acme_server="https://acme.test/directory")
SITE = site("a.example.com", "www.a.example.com")
DAY = timedelta(days=1)


def _cert(**kw: Any) -> Certificate:
    kw.setdefault("acme_server", POLICY.acme_server)
    return cert("a.example.com", "www.a.example.com", **kw)


@pytest.mark.parametrize(
    ("certificate", "action", "words"),
    [
        (None, Action.ISSUE, "no certificate"),
        (cert("a.example.com"), Action.EXPAND, "adds www.a.example.com"),
        (cert("a.example.com", "www.a.example.com", "old.example.com"), Action.EXPAND, "drops old.example.com"),
        (cert("a.example.com", "b.example.com"), Action.EXPAND, "adds www.a.example.com; drops b.example.com"),
        (cert("a.example.com", "www.a.example.com", key_type="rsa"), Action.REKEY, "key type rsa -> ecdsa"),
        (cert("a.example.com", "www.a.example.com", acme_server="https://old.test/dir"), Action.REKEY,
         "ACME server changed (https://old.test/dir -> https://acme.test/directory)"),
        (cert("a.example.com", "www.a.example.com", not_before=NOW - 91 * DAY), Action.RENEW, "expired"),
        (cert("a.example.com", "www.a.example.com", not_before=NOW - 70 * DAY), Action.RENEW, "due since"),
        (cert("a.example.com", "www.a.example.com", not_before=NOW - 10 * DAY), Action.OK, "valid until"),
        (cert("a.example.com", "www.a.example.com", not_before=NOW - 10 * DAY, acme_server=""), Action.OK,
         "valid until"),
    ],
    ids=["no-cert", "name-added", "name-dropped", "added-and-dropped", "key-type", "acme-server", "expired",
         "due", "not-due", "unknown-server-is-not-a-change"],
)
def test_decide(certificate: Certificate | None, action: Action, words: str) -> None:
    d = decide(SITE, certificate, None, POLICY, NOW)
    assert d.action is action
    assert words in d.reason
    assert d.needs_certbot is (action is not Action.OK)
    assert d.pending is None


def test_not_due_says_when() -> None:
    c = _cert(not_before=NOW - 10 * DAY)
    d = decide(SITE, c, None, POLICY, NOW)
    assert d.action is Action.OK
    assert d.at == renewal_time(c) and d.at > NOW


@pytest.mark.parametrize(
    ("lifetime", "remaining_fraction"),
    [(90 * DAY, 1 / 3), (30 * DAY, 1 / 3), (10 * DAY, 1 / 3), (6 * DAY, 1 / 2), (DAY, 1 / 2)],
    ids=["90-days", "30-days", "10-days", "6-days", "1-day"],
)
def test_renewal_time(lifetime: timedelta, remaining_fraction: float) -> None:
    for lineage in ("a.example.com", "b.example.com", "c.example.com", "zz.example.org"):
        c = cert(lineage, lifetime=lifetime, not_before=NOW)
        nominal = c.not_after - lifetime * remaining_fraction
        spread = min(lifetime / 100, timedelta(hours=12))
        due = renewal_time(c)
        assert nominal - spread <= due <= nominal, lineage
        assert renewal_time(c) == due  # stable, not random


def test_90_day_certificate_is_due_at_two_thirds_of_its_lifetime() -> None:
    c = _cert(not_before=NOW)
    lifetime = c.not_after - c.not_before
    due = decide(SITE, c, None, POLICY, NOW).at
    assert due is not None
    assert c.not_after - lifetime / 3 - timedelta(hours=12) <= due <= c.not_after - lifetime / 3
    assert decide(SITE, c, None, POLICY, due - timedelta(seconds=1)).action is Action.OK
    assert decide(SITE, c, None, POLICY, due).action is Action.RENEW


def test_six_day_certificate_is_due_at_half_its_lifetime() -> None:
    c = _cert(not_before=NOW, lifetime=6 * DAY)
    due = decide(SITE, c, None, POLICY, NOW).at
    assert due is not None
    assert NOW + 3 * DAY - timedelta(hours=6 * 24 / 100) <= due <= NOW + 3 * DAY
    assert decide(SITE, c, None, POLICY, NOW + 3 * DAY).action is Action.RENEW


@pytest.mark.parametrize(
    ("window", "now", "action"),
    [
        ((NOW + 20 * DAY, NOW + 22 * DAY), NOW, Action.OK),
        ((NOW - 2 * DAY, NOW - DAY), NOW, Action.RENEW),
        ((NOW + 5 * DAY, NOW + 5 * DAY), NOW + 5 * DAY, Action.RENEW),
        ((NOW + 200 * DAY, NOW + 201 * DAY), NOW + 100 * DAY, Action.RENEW),
    ],
    ids=["window-ahead", "window-passed", "empty-window", "window-after-expiry"],
)
def test_ari_window_is_used(window: tuple[datetime, datetime], now: datetime, action: Action) -> None:
    c = _cert(not_before=NOW - 10 * DAY)  # nominally due at day 60
    d = decide(SITE, c, None, POLICY, now, ari_window=window)
    assert d.action is action
    if action is Action.OK:
        assert d.at is not None and window[0] <= d.at < window[1]
        assert d.at != renewal_time(c)


@pytest.mark.parametrize(
    "window",
    [
        pytest.param(lambda c: (c.not_after + DAY, c.not_after + 2 * DAY), id="after-expiry"),
        pytest.param(lambda c: (c.not_before - DAY, c.not_after + DAY), id="wider-than-validity"),
    ],
)
def test_implausible_ari_window_is_ignored_for_the_lifetime_rule(window) -> None:  # type: ignore[no-untyped-def]
    c = _cert(not_before=NOW - 10 * DAY)
    d = decide(SITE, c, None, POLICY, NOW, ari_window=window(c))
    assert (d.action, d.at) == (Action.OK, renewal_time(c))
    assert d.at < c.not_after


def test_ari_window_earlier_than_the_default_triggers_renewal_early() -> None:
    c = _cert(not_before=NOW - 10 * DAY)
    assert decide(SITE, c, None, POLICY, NOW).action is Action.OK
    assert decide(SITE, c, None, POLICY, NOW, ari_window=(NOW - DAY, NOW)).action is Action.RENEW


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, timedelta(minutes=1)), (2, timedelta(minutes=10)), (3, timedelta(minutes=100)), (4, DAY), (5, DAY),
     (40, DAY)],
    ids=["1st", "2nd", "3rd", "4th", "5th", "40th"],
)
def test_backoff_sequence(failures: int, delay: timedelta) -> None:
    assert backoff_delay(failures) == delay
    attempt = Attempt(failures=failures, last_failure=NOW, last_error="boom", domains=SITE.domains)
    waiting = decide(SITE, None, attempt, POLICY, NOW + delay - timedelta(seconds=1))
    assert waiting.action is Action.WAIT
    assert waiting.pending is Action.ISSUE
    assert waiting.at == NOW + delay
    assert "back-off after" in waiting.reason and "last error: boom" in waiting.reason
    assert not waiting.needs_certbot
    assert decide(SITE, None, attempt, POLICY, NOW + delay).action is Action.ISSUE


def test_no_failures_no_backoff() -> None:
    assert backoff_delay(0) == timedelta(0)
    assert decide(SITE, None, Attempt(), POLICY, NOW).action is Action.ISSUE


def test_backoff_applies_to_renewals_too() -> None:
    c = _cert(not_before=NOW - 70 * DAY)
    attempt = Attempt(failures=2, last_failure=NOW, domains=SITE.domains)
    d = decide(SITE, c, attempt, POLICY, NOW + timedelta(minutes=5))
    assert (d.action, d.pending, d.at) == (Action.WAIT, Action.RENEW, NOW + timedelta(minutes=10))


def test_backoff_ignored_when_domains_changed() -> None:
    attempt = Attempt(failures=4, last_failure=NOW, domains=("a.example.com",))
    assert decide(SITE, None, attempt, POLICY, NOW + timedelta(minutes=1)).action is Action.ISSUE


def test_ca_retry_after_is_honoured_even_when_domains_changed() -> None:
    retry = NOW + timedelta(hours=5)
    attempt = Attempt(failures=1, last_failure=NOW, domains=("a.example.com",), not_before=retry,
                      last_error="rate limited")
    d = decide(SITE, None, attempt, POLICY, NOW + timedelta(hours=1))
    assert (d.action, d.pending, d.at) == (Action.WAIT, Action.ISSUE, retry)
    assert "retry after" in d.reason
    assert decide(SITE, None, attempt, POLICY, retry).action is Action.ISSUE


def test_latest_of_backoff_and_retry_after_wins() -> None:
    attempt = Attempt(failures=4, last_failure=NOW, domains=SITE.domains, not_before=NOW + timedelta(hours=2))
    assert decide(SITE, None, attempt, POLICY, NOW).at == NOW + DAY


def test_attempts_do_not_matter_when_certificate_is_fine() -> None:
    c = _cert(not_before=NOW - 10 * DAY)
    attempt = Attempt(failures=3, last_failure=NOW, domains=SITE.domains, not_before=NOW + DAY)
    assert decide(SITE, c, attempt, POLICY, NOW).action is Action.OK


def test_plan_orders_work_and_picks_the_earliest_wakeup() -> None:
    renew = site("renew.example.com")
    issue = site("issue.example.com")
    expand = site("expand.example.com", "new.expand.example.com")
    rekey = site("rekey.example.com")
    ok_late = site("ok-late.example.com")
    ok_soon = site("ok-soon.example.com")
    waiting = site("waiting.example.com")
    certificates = {
        "renew.example.com": cert("renew.example.com", not_before=NOW - 80 * DAY),
        "expand.example.com": cert("expand.example.com"),
        "rekey.example.com": cert("rekey.example.com", key_type="rsa"),
        "ok-late.example.com": cert("ok-late.example.com", not_before=NOW),
        "ok-soon.example.com": cert("ok-soon.example.com", not_before=NOW - 50 * DAY),
    }
    attempts = {"waiting.example.com": Attempt(failures=1, last_failure=NOW, domains=waiting.domains)}
    p = plan([renew, ok_late, waiting, rekey, issue, ok_soon, expand], certificates, attempts, POLICY, NOW)
    assert [(d.site.name, d.action) for d in p.decisions] == [
        ("issue.example.com", Action.ISSUE),
        ("expand.example.com", Action.EXPAND),
        ("rekey.example.com", Action.REKEY),
        ("renew.example.com", Action.RENEW),
        ("ok-late.example.com", Action.OK),
        ("ok-soon.example.com", Action.OK),
        ("waiting.example.com", Action.WAIT),
    ]
    assert [d.site.name for d in p.to_run] == [
        "issue.example.com", "expand.example.com", "rekey.example.com", "renew.example.com"]
    assert p.next_wakeup == NOW + timedelta(minutes=1)
    # without the back-off, the soonest renewal is next
    p2 = plan([ok_late, ok_soon], certificates, {}, POLICY, NOW)
    assert p2.next_wakeup == renewal_time(certificates["ok-soon.example.com"])
    assert p2.next_wakeup == min(d.at for d in p2.decisions if d.at is not None)


def test_plan_uses_ari_windows_by_lineage_name() -> None:
    s = site("a.example.com")
    c = cert("a.example.com", not_before=NOW - 10 * DAY)
    p = plan([s], {"a.example.com": c}, {}, POLICY, NOW, ari_windows={"a.example.com": (NOW - DAY, NOW)})
    assert p.decisions[0].action is Action.RENEW


def test_empty_plan() -> None:
    p = plan([], {}, {}, POLICY, NOW)
    assert p.decisions == () and p.next_wakeup is None and p.to_run == ()


def test_decision_needs_certbot() -> None:
    for action in Action:
        d = Decision(SITE, action, "")
        assert d.needs_certbot is (action in (Action.ISSUE, Action.EXPAND, Action.REKEY, Action.RENEW))
