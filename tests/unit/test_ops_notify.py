"""Alerts: what deserves one (deduplicated), delivery off the loop, secrets never logged."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.state import runlogs
from sidecar.core import redact as redaction
from sidecar.core.errors import ConfigError
from sidecar.core.events import Event, Kind, PassSnapshot, SiteStatus
from sidecar.ops.notify import Alert, Alerter, AlertPolicy, AppriseTarget, Dispatcher, combine, redact

from .builders import NOW

DAY = timedelta(days=1)


def failed(site: str, kind: str, at: datetime = NOW, failures: int = 1) -> Event:
    return Event(Kind.CERT_FAILED, at, site, "boom", {
        "failure": kind, "error": f"{kind} went wrong", "next_attempt": at + timedelta(minutes=10),
        "failures": failures,
    })


def issued(site: str, kind: Kind = Kind.CERT_ISSUED, at: datetime = NOW) -> Event:
    return Event(kind, at, site, "", {"not_after": at + 90 * DAY, "next_renewal": at + 60 * DAY, "duration": 3.0})


def status(name: str, not_before: datetime, not_after: datetime, state: str = "renew", **kw: Any) -> SiteStatus:
    return SiteStatus(name=name, domains=(name,), source="file", state=state, reason="", live=True,
                      not_before=not_before, not_after=not_after, **kw)


# -- policy ---------------------------------------------------------------------------
def test_a_failure_alerts_once_per_kind_until_the_site_succeeds() -> None:
    p = AlertPolicy()
    first = p.on_event(failed("a.example.com", "validation"))
    assert [a.kind for a in first] == ["failed"]
    assert first[0].level == "failure"
    assert "a.example.com" in first[0].title and "validation" in first[0].title
    assert "validation went wrong" in first[0].body and "Next attempt: " in first[0].body
    assert p.on_event(failed("a.example.com", "validation", failures=2)) == []
    assert p.on_event(failed("a.example.com", "validation", failures=3)) == []
    # Another kind of failure is news; another site too.
    assert len(p.on_event(failed("a.example.com", "rate-limited", failures=4))) == 1
    assert len(p.on_event(failed("b.example.com", "validation"))) == 1
    # A success clears the memory: it is announced (with the recovery) and the next failure alerts again.
    ok = p.on_event(issued("a.example.com", Kind.CERT_RENEWED))
    assert [(a.kind, a.level) for a in ok] == [("renewed", "success")]
    assert "works again" in ok[0].body and "validation" in ok[0].body
    assert len(p.on_event(failed("a.example.com", "validation"))) == 1
    assert p.on_event(failed("b.example.com", "validation")) == []


@pytest.mark.parametrize(
    ("kind", "alert_kind", "title"),
    [(Kind.CERT_ISSUED, "issued", "Certificate issued: a.example.com"),
     (Kind.CERT_RENEWED, "renewed", "Certificate renewed: a.example.com")],
    ids=["issued", "renewed"],
)
def test_every_issuance_and_renewal_is_announced(kind: Kind, alert_kind: str, title: str) -> None:
    p = AlertPolicy()
    for _ in range(2):
        (alert,) = p.on_event(issued("a.example.com", kind))
        assert (alert.kind, alert.title) == (alert_kind, title)
        assert "valid until " in alert.body and "UTC" in alert.body


@pytest.mark.parametrize("kind", [Kind.SITE_ADDED, Kind.RELOAD, Kind.CERT_REQUESTED, Kind.CERT_POSTPONED,
                                  Kind.INPUT_PROBLEM, Kind.DOCKER_UNAVAILABLE])
def test_routine_events_are_not_alerted(kind: Kind) -> None:
    assert AlertPolicy().on_event(Event(kind, NOW, "a.example.com")) == []


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(days=40), []),                       # not even due
        (timedelta(days=20), []),                       # due (a third left), renewal may still work
        (timedelta(days=15), ["expiring"]),             # a sixth of 90 days left
        (timedelta(hours=3), ["expiring"]),
        (-timedelta(hours=1), ["expired"]),
    ],
    ids=["40d", "20d", "15d", "3h", "expired"],
)
def test_expiry_alert_when_a_sixth_of_the_lifetime_is_left(left: timedelta, expected: list[str]) -> None:
    not_after = NOW + left
    snap = PassSnapshot(NOW, [status("a.example.com", not_after - 90 * DAY, not_after,
                                     last_error="DNS problem", next_attempt=NOW + DAY)], [])
    alerts = AlertPolicy().on_snapshot(snap)
    assert [a.kind for a in alerts] == expected
    if expected == ["expiring"]:
        assert "DNS problem" in alerts[0].body and alerts[0].level == "warning"


def test_expiry_alerts_once_per_stage_and_certificate_and_short_lifetimes_scale() -> None:
    p = AlertPolicy()
    # A 6-day certificate: a sixth is 24 hours.
    nb = NOW - timedelta(days=5, hours=1)
    na = nb + 6 * DAY
    first = p.on_snapshot(PassSnapshot(NOW, [status("s.example.com", nb, na)], []))
    assert [a.kind for a in first] == ["expiring"]
    assert first[0].title == "Certificate expires in 1 day: s.example.com"
    assert p.on_snapshot(PassSnapshot(NOW + timedelta(hours=1), [status("s.example.com", nb, na)], [])) == []
    assert [a.kind for a in p.on_snapshot(PassSnapshot(na, [status("s.example.com", nb, na)], []))] == ["expired"]
    assert p.on_snapshot(PassSnapshot(na + DAY, [status("s.example.com", nb, na)], [])) == []
    # A new certificate (still failing to renew) is a new story.
    nb2, na2 = na, na + 6 * DAY
    assert [a.kind for a in p.on_snapshot(PassSnapshot(na2 - timedelta(hours=2),
                                                       [status("s.example.com", nb2, na2)], []))] == ["expiring"]


def test_cert_expiring_events_share_the_deduplication() -> None:
    p = AlertPolicy()
    na = NOW + 10 * DAY
    event = Event(Kind.CERT_EXPIRING, NOW, "a.example.com", details={"not_after": na})
    assert [a.kind for a in p.on_event(event)] == ["expiring"]
    assert p.on_snapshot(PassSnapshot(NOW, [status("a.example.com", na - 90 * DAY, na)], [])) == []


def test_policy_state_round_trips_and_ignores_garbage() -> None:
    p = AlertPolicy()
    p.on_event(failed("a.example.com", "validation"))
    p.on_snapshot(PassSnapshot(NOW, [status("b.example.com", NOW - 80 * DAY, NOW + DAY)], []))
    again = AlertPolicy.from_json(json.loads(json.dumps(p.to_json())))
    assert again.on_event(failed("a.example.com", "validation")) == []
    assert again.on_snapshot(PassSnapshot(NOW, [status("b.example.com", NOW - 80 * DAY, NOW + DAY)], [])) == []
    junk: Any
    for junk in (None, [], "x", {"failed": "x", "expiry": {"a": [1]}}):
        assert AlertPolicy.from_json(junk).failed == {}


# -- redaction ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mailto://user:s3cret@smtp.example.com:587?to=ops@example.com", "mailto://smtp.example.com:587"),
        ("mailtos://user:s3cret@example.com", "mailtos://example.com"),
        ("json://hooks.example.com/path/s3cret", "json://hooks.example.com"),
        ("jsons://user:s3cret@hooks.example.com:8443/x?token=s3cret", "jsons://hooks.example.com:8443"),
        ("tgram://123456:s3cret/987", "tgram://…"),
        ("slack://s3cret/s3cret/s3cret", "slack://…"),
        ("discord://s3cret/s3cret", "discord://…"),
    ],
)
def test_redact_keeps_only_scheme_and_real_hosts(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3cret" not in redact(url)


# -- delivery -------------------------------------------------------------------------
class FakeTarget:
    def __init__(self, name: str = "json://fake", fail: int = 0, gate: threading.Event | None = None) -> None:
        self.name = name
        self.fail = fail
        self.gate = gate
        self.sent: list[tuple[str, str, str]] = []
        self.calls = 0

    def send(self, title: str, body: str, level: str) -> bool:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail > 0:
            self.fail -= 1
            return False
        self.sent.append((title, body, level))
        return True


def _alert(n: int, level: str = "info", kind: str = "issued") -> Alert:
    return Alert(kind, f"s{n}.example.com", f"Title {n}", f"Body {n}", level)


def _wait(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_alerts_close_together_go_out_as_one_message_to_every_target() -> None:
    a, b = FakeTarget("json://a"), FakeTarget("mailto://b")
    d = Dispatcher([a, b], batch_seconds=0.3, retry_delays=())
    d.start()
    try:
        d.submit(_alert(1))
        d.submit(_alert(2, "failure", "failed"))
        _wait(lambda: a.sent and b.sent)
    finally:
        d.stop()
    assert a.sent == b.sent
    ((title, body, level),) = a.sent
    assert level == "failure"
    assert "2 certificate events" in title and "1 issued" in title and "1 failed" in title
    assert "Title 1" in body and "Body 2" in body


def test_a_single_alert_keeps_its_title() -> None:
    assert combine([_alert(7, "warning")]) == ("[nginx-acme-sidecar] Title 7", "Body 7", "warning")


def test_failed_deliveries_are_retried_then_given_up_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    flaky, dead = FakeTarget("json://flaky", fail=2), FakeTarget("json://dead", fail=99)
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        return False  # not stopping

    d = Dispatcher([flaky, dead], batch_seconds=0, retry_delays=(1.0, 2.0, 3.0), sleep=sleep)
    with caplog.at_level(logging.INFO, logger="sidecar"):
        d.deliver([_alert(1)])
    assert flaky.calls == 3 and len(flaky.sent) == 1
    assert dead.calls == 4 and dead.sent == []
    assert waits == [1.0, 2.0, 1.0, 2.0, 3.0]
    assert (d.sent, d.undelivered) == (1, 1)
    assert "alert NOT delivered to json://dead" in caplog.text


def test_submit_never_blocks_and_drops_when_the_queue_is_full(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    slow = FakeTarget(gate=gate)
    d = Dispatcher([slow], maxsize=2, batch_seconds=0, retry_delays=())
    d.start()
    try:
        assert d.submit(_alert(0))
        _wait(lambda: slow.calls == 1)  # the sender is stuck in send()
        started = time.monotonic()
        results = [d.submit(_alert(n)) for n in range(1, 6)]
        assert time.monotonic() - started < 0.5
        assert results == [True, True, False, False, False]
        assert d.dropped == 3
        assert "alert queue full" in caplog.text
    finally:
        gate.set()
        d.stop()


def test_a_sender_that_raises_is_a_failed_delivery_not_a_dead_thread() -> None:
    class Broken(FakeTarget):
        def send(self, title: str, body: str, level: str) -> bool:
            raise RuntimeError("bug")

    good = FakeTarget()
    d = Dispatcher([Broken("json://broken"), good], batch_seconds=0, retry_delays=())
    d.start()
    try:
        d.submit(_alert(1))
        _wait(lambda: good.sent)
        d.submit(_alert(2))
        _wait(lambda: len(good.sent) == 2)
    finally:
        d.stop()


# -- the observer -----------------------------------------------------------------------
def test_alerter_dispatches_persists_and_adds_the_certbot_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runlogs.keep(tmp_path, "a.example.com", 1, "Detail: no\nSome challenges have failed.\n", NOW)
    sent: list[Alert] = []

    class Capture(Dispatcher):
        def submit(self, alert: Alert) -> bool:
            sent.append(alert)
            return True

    alerter = Alerter(AlertPolicy(), Capture([]), tmp_path)
    alerter.event(failed("a.example.com", "validation"))
    alerter.event(failed("a.example.com", "validation"))
    assert [a.kind for a in sent] == ["failed"]
    assert "certbot output: " + str(tmp_path / "certbot-logs" / "a.example.com") in sent[0].body
    saved = json.loads((tmp_path / "alerts.json").read_text())
    assert saved["failed"] == {"a.example.com": ["validation"]}

    # A restarted sidecar remembers: no second alert for the same failure.
    again = Alerter.from_settings([], tmp_path)
    assert again.dispatcher is None
    assert again.policy.on_event(failed("a.example.com", "validation")) == []

    with caplog.at_level(logging.WARNING, logger="sidecar"):
        alerter.snapshot(PassSnapshot(NOW, [status("b.example.com", NOW - 85 * DAY, NOW + 5 * DAY,
                                                   last_error="timeout")], []))
    assert "Site b.example.com: the certificate expires at" in caplog.text and "Last error: timeout" in caplog.text


def test_without_alert_urls_expiry_is_still_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    alerter = Alerter.from_settings([], tmp_path)
    with caplog.at_level(logging.WARNING, logger="sidecar"):
        alerter.snapshot(PassSnapshot(NOW, [status("c.example.com", NOW - 90 * DAY, NOW - DAY)], []))
    assert "c.example.com: the certificate expired at" in caplog.text


# -- apprise, for real, against a local webhook ------------------------------------------
@pytest.fixture
def webhook() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()
        server.server_close()


def test_apprise_json_target_posts_title_body_and_type(webhook: tuple[int, list[dict[str, Any]]]) -> None:
    port, received = webhook
    target = AppriseTarget(f"json://127.0.0.1:{port}/hook")
    assert target.name == f"json://127.0.0.1:{port}"
    assert target.send("Certificate request failed: a.example.com", "validation went wrong", "failure")
    (doc,) = received
    assert doc["title"] == "Certificate request failed: a.example.com"
    assert doc["message"] == "validation went wrong"
    assert doc["type"] == "failure"


def test_an_url_apprise_does_not_understand_is_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as err:
        AppriseTarget("nosuchservice://user:s3cret@host/x", position=2)
    assert "ALERT_URLS: entry 2 (nosuchservice://…)" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_a_target_registers_its_url_so_no_alert_carries_its_password(
        webhook: tuple[int, list[dict[str, Any]]]) -> None:
    port, received = webhook
    try:
        target = AppriseTarget(f"json://bot:Hook-Pass-42@127.0.0.1:{port}/hook")
        title, body, level = combine([Alert("failed", "a.example.com", "Certificate request failed: a.example.com",
                                            "the hook said Hook-Pass-42 is wrong", "failure")])
        assert target.send(title, body, level)
    finally:
        redaction.clear()
    (doc,) = received
    assert doc["message"] == f"the hook said {redaction.MARKER} is wrong"
