"""The status server: health verdicts, status and plan documents, the event journal, renew requests."""

from __future__ import annotations

import enum
import http.client
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.state import runlogs
from sidecar.core.events import Event, Kind, PassSnapshot, SiteStatus
from sidecar.ops.httpserver import (EventJournal, OpsApp, StatusBoard, StatusServer, events_document, health,
                                    json_safe, plan_document, site_row)
from sidecar.ops.metrics import Metrics
from sidecar.core.schedule import Work
from sidecar.core.planner import Action, Attempt, Policy, plan

from .builders import NOW, cert, site

MIN = timedelta(minutes=1)


def _snap(at: datetime = NOW, *sites: SiteStatus) -> PassSnapshot:
    return PassSnapshot(at, list(sites), ["container bad: label acme.port: 'x' is not a port"], {"new_orders": 299})


@pytest.mark.parametrize(
    ("last_pass", "docker_ok", "healthy", "words"),
    [
        (None, True, False, "starting"),
        (NOW - MIN, True, True, ""),
        (NOW - 14 * MIN, True, True, ""),
        (NOW - 16 * MIN, True, False, "the last pass finished 960s ago"),
        (NOW - MIN, False, False, "Docker API unreachable: connection refused"),
    ],
    ids=["starting", "fresh", "quiet", "stuck", "no-docker"],
)
def test_health_needs_a_recent_pass_and_docker(last_pass: datetime | None, docker_ok: bool, healthy: bool,
                                               words: str) -> None:
    snap = _snap(last_pass) if last_pass else None
    ok, doc = health(snap, docker_ok, "" if docker_ok else "connection refused", NOW)
    assert ok is healthy
    assert doc["status"] == ("ok" if healthy else "unhealthy")
    assert words in " ".join(doc.get("problems", []))


def test_board_turns_unhealthy_on_docker_failure_and_recovers_on_the_next_pass() -> None:
    clock = [NOW]
    board = StatusBoard(clock=lambda: clock[0])
    app = OpsApp(board, Metrics(), clock=lambda: clock[0])
    assert app.healthz()[0] == 503
    board.snapshot(_snap(NOW))
    assert app.healthz()[0] == 200
    board.event(Event(Kind.DOCKER_UNAVAILABLE, NOW, message="listing containers failed: refused"))
    code, doc = app.healthz()
    assert code == 503 and "refused" in doc["problems"][0]
    board.snapshot(_snap(NOW + MIN))
    assert app.healthz()[0] == 200
    clock[0] = NOW + timedelta(hours=1)
    assert app.healthz()[0] == 503


def test_site_row_says_what_comes_next_and_shows_the_latest_certbot_log(tmp_path: Path) -> None:
    runlogs.keep(tmp_path, "b.example.com", 1, "Detail: DNS problem: NXDOMAIN\nAsk for help or search\n", NOW - MIN)
    ok = SiteStatus("a.example.com", ("a.example.com", "www.a.example.com"), "container app", "ok",
                    "valid until 2026-08-30 12:00 UTC", True, not_after=NOW + timedelta(days=90),
                    not_before=NOW, next_renewal=NOW + timedelta(days=60))
    waiting = SiteStatus("b.example.com", ("b.example.com",), "sites file /config/sites.yml", "wait",
                         "no certificate yet; back-off after 1 failure", False, next_attempt=NOW + 10 * MIN,
                         last_error="DNS problem: NXDOMAIN", failures=1)
    due = SiteStatus("c.example.com", ("c.example.com",), "container c", "issue", "no certificate yet", False)
    rows = [site_row(s, NOW, runlogs.latest(tmp_path, s.name)) for s in (ok, waiting, due)]
    assert rows[0]["next"] == (NOW + timedelta(days=60)).isoformat()
    assert rows[0]["expires_in_days"] == 90.0
    assert rows[0]["certbot_log"] is None
    assert rows[1]["next"] == (NOW + 10 * MIN).isoformat()
    assert (rows[1]["failures"], rows[1]["last_error"]) == (1, "DNS problem: NXDOMAIN")
    assert rows[1]["certbot_log"]["exit_code"] == 1
    assert rows[1]["certbot_log"]["last_line"] == "Detail: DNS problem: NXDOMAIN"
    assert rows[1]["certbot_log"]["path"].startswith(str(tmp_path / "certbot-logs" / "b.example.com"))
    assert rows[2]["next"] == NOW.isoformat()


def test_plan_document_marks_waits_forced_and_postponed_sites() -> None:
    a, b, c = site("a.example.com"), site("b.example.com"), site("c.example.com")
    certs = {"a.example.com": cert("a.example.com"), "c.example.com": cert("c.example.com")}
    attempts = {"b.example.com": Attempt(failures=1, last_failure=NOW - MIN / 2, last_error="boom",
                                         domains=("b.example.com",))}
    the_plan = plan([a, b, c], certs, attempts, Policy(), NOW, forced=frozenset({"c.example.com"}))
    doc = plan_document(the_plan, NOW, {"c.example.com": NOW + timedelta(hours=2)}, frozenset({"c.example.com"}))
    rows = {r["site"]: r for r in doc["decisions"]}
    assert rows["a.example.com"]["action"] == "ok" and not rows["a.example.com"]["runs_certbot"]
    assert rows["b.example.com"]["action"] == "wait" and rows["b.example.com"]["pending"] == "issue"
    assert "back-off after 1 failure" in rows["b.example.com"]["reason"]
    assert rows["c.example.com"]["action"] == "renew" and rows["c.example.com"]["forced"]
    assert rows["c.example.com"]["reason"] == "renewal requested by operator"
    assert rows["c.example.com"]["postponed_until"] == (NOW + timedelta(hours=2)).isoformat()


def test_forced_renewal_only_turns_ok_into_renew_and_keeps_the_back_off() -> None:
    a = site("a.example.com")
    c = cert("a.example.com")
    (d,) = plan([a], {"a.example.com": c}, {}, Policy(), NOW, forced=frozenset({"a.example.com"})).decisions
    assert (d.action, d.reason) == (Action.RENEW, "renewal requested by operator")
    retry_after = Attempt(failures=1, last_failure=NOW - MIN, domains=a.domains, not_before=NOW + MIN)
    (d,) = plan([a], {"a.example.com": c}, {"a.example.com": retry_after}, Policy(), NOW,
                forced=frozenset({"a.example.com"})).decisions
    assert d.action == Action.WAIT and d.pending == Action.RENEW
    (d,) = plan([a], {}, {}, Policy(), NOW, forced=frozenset({"a.example.com"})).decisions
    assert d.action == Action.ISSUE


# -- the event journal ---------------------------------------------------------------------
def _ev(site: str, kind: Kind = Kind.SITE_ADDED, **details: object) -> Event:
    return Event(kind, NOW, site, f"{kind.value} {site}", dict(details))


def test_journal_numbers_events_and_answers_what_came_after_a_number() -> None:
    journal = EventJournal(clock=lambda: NOW)
    assert events_document(journal, 0) == {"events": [], "next": 0, "missed": 0, "started": NOW.isoformat()}
    for name in ("a", "b", "c"):
        journal.event(_ev(name))
    doc = events_document(journal, 0)
    assert [(e["seq"], e["site"]) for e in doc["events"]] == [(1, "a"), (2, "b"), (3, "c")]
    assert doc["next"] == 3
    later = events_document(journal, 2)
    assert [e["site"] for e in later["events"]] == ["c"] and later["next"] == 3
    assert events_document(journal, 3)["events"] == []
    journal.snapshot(_snap())  # passes are not events
    assert events_document(journal, 3) == {"events": [], "next": 3, "missed": 0, "started": NOW.isoformat()}


@pytest.mark.parametrize(
    ("since", "seqs", "missed"),
    [(0, [4, 5, 6], 3), (2, [4, 5, 6], 1), (3, [4, 5, 6], 0), (5, [6], 0), (9, [], 0)],
    ids=["from-start", "partly-gone", "just-kept", "recent", "ahead"],
)
def test_journal_keeps_the_latest_events_and_says_how_many_were_dropped(since: int, seqs: list[int],
                                                                       missed: int) -> None:
    journal = EventJournal(size=3)
    for i in range(6):
        journal.event(_ev(f"s{i + 1}"))
    doc = events_document(journal, since)
    assert ([e["seq"] for e in doc["events"]], doc["missed"], doc["next"]) == (seqs, missed, 6)


class _Colour(enum.Enum):
    RED = "red"


class _Thing:
    def __str__(self) -> str:
        return "a thing"


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        (NOW, NOW.isoformat()),
        (None, None),
        (_Colour.RED, "red"),
        (Kind.RELOAD, "reload"),
        (Path("/etc/x.conf"), "/etc/x.conf"),
        (timedelta(seconds=90), 90.0),
        (("a", NOW), ["a", NOW.isoformat()]),
        ({"b", "a"}, ["a", "b"]),
        ({"at": NOW, 1: [NOW]}, {"at": NOW.isoformat(), "1": [NOW.isoformat()]}),
        (_Thing(), "a thing"),
    ],
    ids=["datetime", "none", "enum", "str-enum", "path", "timedelta", "tuple", "set", "nested", "other"],
)
def test_event_details_become_json(value: object, plain: object) -> None:
    assert json_safe(value) == plain
    json.dumps(json_safe(value))


def test_journal_row_carries_every_field_of_the_event() -> None:
    journal = EventJournal()
    journal.event(_ev("a.example.com", Kind.CERT_FAILED, failure="rate-limited", next_attempt=NOW + MIN,
                      written=("x.conf",)))
    (row,) = events_document(journal, 0)["events"]
    assert row == {"seq": 1, "kind": "cert_failed", "at": NOW.isoformat(), "site": "a.example.com",
                   "message": "cert_failed a.example.com",
                   "details": {"failure": "rate-limited", "next_attempt": (NOW + MIN).isoformat(),
                               "written": ["x.conf"]}}


def test_journal_numbers_stay_unique_and_in_order_with_many_writers() -> None:
    journal = EventJournal(size=10_000)
    writers = [threading.Thread(target=lambda w=w: [journal.event(_ev(f"{w}-{i}")) for i in range(500)])
               for w in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    doc = events_document(journal, 0)
    assert [e["seq"] for e in doc["events"]] == list(range(1, 4001)) and doc["next"] == 4000
    for w in range(8):  # each writer's events in the order it wrote them
        mine = [int(e["site"].split("-")[1]) for e in doc["events"] if e["site"].startswith(f"{w}-")]
        assert mine == list(range(500))


# -- the real server, with a fake reconciler ---------------------------------------------
class FakeControls:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bool]] = []
        self.forced: set[str] = set()

    def preview(self) -> Any:
        return Work(plan([site("a.example.com")], {}, {}, Policy(), NOW), forced=frozenset(self.forced))

    def request_renewal(self, name: str, force: bool = False) -> str:
        if name != "a.example.com":
            raise KeyError(name)
        self.requests.append((name, force))
        return f"site {name}: requested"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[StatusServer, StatusBoard, FakeControls]]:
    board, controls = StatusBoard(), FakeControls()
    srv = StatusServer(OpsApp(board, Metrics(), tmp_path, controls), "127.0.0.1", 0)
    srv.start()
    try:
        yield srv, board, controls
    finally:
        srv.stop()


def _call(port: int, method: str, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def test_endpoints(server: tuple[StatusServer, StatusBoard, FakeControls]) -> None:
    srv, board, controls = server
    port = srv.port
    assert _call(port, "GET", "/healthz")[0] == 503
    assert _call(port, "GET", "/plan")[0] == 503
    board.snapshot(PassSnapshot(datetime.now(NOW.tzinfo), [
        SiteStatus("a.example.com", ("a.example.com",), "container a", "issue", "no certificate yet", False)],
        [], {}))
    code, ctype, body = _call(port, "GET", "/healthz")
    assert (code, json.loads(body)["status"]) == (200, "ok")
    code, ctype, body = _call(port, "GET", "/metrics")
    assert code == 200 and ctype.startswith("text/plain") and "nginx_acme_sites" in body
    code, _, body = _call(port, "GET", "/status")
    assert code == 200 and json.loads(body)["sites"][0]["site"] == "a.example.com"
    code, _, body = _call(port, "GET", "/plan")
    assert code == 200 and json.loads(body)["decisions"][0]["action"] == "issue"
    code, _, body = _call(port, "POST", "/renew/a.example.com?force=1")
    assert code == 202 and controls.requests == [("a.example.com", True)]
    assert _call(port, "POST", "/renew/a.example.com")[0] == 202
    assert controls.requests[-1] == ("a.example.com", False)
    code, _, body = _call(port, "POST", "/renew/nope.example.com")
    assert code == 404 and "no site named" in body
    assert _call(port, "GET", "/nope")[0] == 404
    assert _call(port, "POST", "/status")[0] == 404
    assert "/events?since=N" in json.loads(_call(port, "GET", "/")[2])["endpoints"]


def test_events_endpoint(server: tuple[StatusServer, StatusBoard, FakeControls]) -> None:
    srv, _, _ = server
    journal = srv.app.journal
    journal.event(_ev("a.example.com", Kind.SITE_LIVE, domains=["a.example.com"]))
    journal.event(Event(Kind.CERT_ISSUED, NOW, "a.example.com", "valid until", {"not_after": NOW + MIN}))
    code, ctype, body = _call(srv.port, "GET", "/events")
    doc = json.loads(body)
    assert (code, ctype) == (200, "application/json")
    assert [(e["seq"], e["kind"]) for e in doc["events"]] == [(1, "site_live"), (2, "cert_issued")]
    assert doc["events"][1]["details"] == {"not_after": (NOW + MIN).isoformat()}
    assert doc["next"] == 2 and doc["missed"] == 0
    assert datetime.fromisoformat(doc["started"]) == journal.started
    code, _, body = _call(srv.port, "GET", "/events/?since=1")
    assert code == 200 and [e["seq"] for e in json.loads(body)["events"]] == [2]
    code, _, body = _call(srv.port, "GET", "/events?since=two")
    assert code == 400 and "since='two'" in json.loads(body)["error"]
