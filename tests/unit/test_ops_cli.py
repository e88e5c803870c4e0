"""Operator commands: formatting, talking to the running sidecar, fall-backs; their settings."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.ops import cli

from sidecar.state import runlogs

from sidecar.core import settings
from sidecar.core.errors import ConfigError
from sidecar.core.events import PassSnapshot, SiteStatus
from sidecar.ops.httpserver import OpsApp, StatusBoard, StatusServer
from sidecar.ops.metrics import Metrics
from sidecar.core.schedule import Work
from sidecar.core.planner import Policy, plan

from .builders import NOW, site

DAY = timedelta(days=1)


# -- pure formatting ------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (89, "89s"), (600, "10m"), (7200, "2h"), (-3 * 86400, "3d")])
def test_ago(seconds: float, text: str) -> None:
    assert cli.ago(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), ("garbage", "-"), ((NOW + 60 * DAY).isoformat(), "2026-07-31 12:00 (in 60d)"),
     ((NOW - 3 * 3600 * timedelta(seconds=1)).isoformat(), "2026-06-01 09:00 (3h ago)"),
     (NOW.isoformat(), "2026-06-01 12:00 (now)")],
)
def test_when(value: Any, text: str) -> None:
    assert cli.when(value, NOW) == text


def test_table_aligns_and_caps_columns() -> None:
    text = cli.table(["A", "LONG HEADER"], [["x", "y" * 30], ["yyy", "z"]], [0, 10])
    assert text.splitlines() == ["A    LONG HEADER", "x    yyyyyyyyy…", "yyy  z"]


STATUS_DOC: dict[str, Any] = {
    "now": NOW.isoformat(),
    "health": {"status": "ok", "last_pass_age_seconds": 3.2},
    "sites": [
        {"site": "a.example.com", "names": ["a.example.com", "www.a.example.com"], "source": "container app-a",
         "state": "ok", "live": True, "not_after": (NOW + 89 * DAY).isoformat(),
         "next": (NOW + 59 * DAY).isoformat(), "why": "valid until 2026-08-29 12:00 UTC", "failures": 0,
         "last_error": "", "certbot_log": {"path": "/var/lib/nginx-acme-sidecar/certbot-logs/a.example.com/x-0.log",
                                           "at": (NOW - DAY).isoformat(), "exit_code": 0,
                                           "last_line": "Successfully received certificate."}},
        {"site": "bad.example.com", "names": ["bad.example.com"], "source": "sites file /config/sites.yml",
         "state": "wait", "live": False, "not_after": None, "next": (NOW + 600 * timedelta(seconds=1)).isoformat(),
         "why": "no certificate yet; back-off after 2 failures; last error: " + "x" * 200, "failures": 2,
         "last_error": "Pebble rejected the name", "certbot_log": {"path": "/p/bad.log", "at": NOW.isoformat(),
                                                                 "exit_code": None, "last_line": "killed"}},
    ],
    "problems": ["container c: label acme.port: 'http' is not a port"],
    "rate_limit_budgets": {"new_orders": 298, "registered_domain:example.com": 47},
}


def test_format_status_is_a_table_with_logs_budgets_and_problems() -> None:
    text = cli.format_status(STATUS_DOC)
    lines = text.splitlines()
    assert lines[0] == "sidecar ok: last pass 3s ago, 2 sites; times in UTC"
    assert lines[1].split() == ["SITE", "NAMES", "SOURCE", "STATE", "EXPIRES", "NEXT", "WHY", "FAILS", "LAST",
                                "ERROR"]
    row_a = lines[2]
    assert row_a.split()[:4] == ["a.example.com", "a.example.com,www.a.example.com", "container", "app-a"]
    assert "2026-08-29 (in 89d)" in row_a and "2026-07-30 12:00 (in 59d)" in row_a
    row_b = lines[3]
    assert "wait (not live)" in row_b and "(in 10m)" in row_b and "Pebble rejected the name" in row_b
    assert "…" in row_b  # the long reason is cut in the table (JSON has it whole)
    assert "  a.example.com: exit 0, 2026-05-31 12:00 (24h ago): Successfully received certificate." in lines
    assert "  bad.example.com: timed out, 2026-06-01 12:00 (now): killed" in lines
    assert "rate-limit budget left: new_orders 298, registered_domain:example.com 47" in lines
    assert "  container c: label acme.port: 'http' is not a port" in lines


def test_format_status_when_unhealthy_or_empty() -> None:
    text = cli.format_status({"now": NOW.isoformat(), "health": {"status": "unhealthy",
                                                                 "problems": ["Docker API unreachable: x"]},
                              "sites": []})
    assert text.splitlines() == ["sidecar UNHEALTHY: Docker API unreachable: x", "no sites yet"]


def test_format_plan() -> None:
    doc = {"now": NOW.isoformat(), "next_wakeup": (NOW + 600 * timedelta(seconds=1)).isoformat(), "decisions": [
        {"site": "a.example.com", "action": "ok", "runs_certbot": False, "reason": "valid until x",
         "at": (NOW + 59 * DAY).isoformat()},
        {"site": "b.example.com", "action": "wait", "pending": "issue", "runs_certbot": False,
         "reason": "no certificate yet; back-off", "at": (NOW + 600 * timedelta(seconds=1)).isoformat()},
        {"site": "c.example.com", "action": "renew", "runs_certbot": True, "forced": True,
         "reason": "renewal requested by operator"},
        {"site": "d.example.com", "action": "issue", "runs_certbot": True, "reason": "no certificate yet",
         "postponed_until": (NOW + 2 * 3600 * timedelta(seconds=1)).isoformat()},
    ]}
    lines = cli.format_plan(doc).splitlines()
    assert lines[0].split() == ["SITE", "NEXT", "PASS", "WOULD", "WHEN", "WHY"]
    assert lines[1].split()[:2] == ["a.example.com", "nothing"] and "renew 2026-07-30 12:00 (in 59d)" in lines[1]
    assert "wait, then issue" in lines[2] and "(in 10m)" in lines[2]
    assert "renew: run certbot (forced)" in lines[3] and " now " in lines[3]
    assert "postponed to 2026-06-01 14:00 (in 2h) (rate limit)" in lines[4]
    assert lines[5] == "next timed pass: 2026-06-01 12:10 (in 10m)"
    assert cli.format_plan({"decisions": []}) == "no sites: nothing to do"


# -- commands against a real status server with a fake reconciler ------------------------
class FakeControls:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bool]] = []

    def preview(self) -> Any:
        return Work(plan([site("a.example.com")], {}, {}, Policy(), datetime.now(timezone.utc)))

    def request_renewal(self, name: str, force: bool = False) -> str:
        if name != "a.example.com":
            raise KeyError(name)
        self.requests.append((name, force))
        return f"site {name}: {'forced renewal' if force else 'renewal check'} requested"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(__import__("os").environ):
        if key.startswith(("ACME_", "STATUS_", "ALERT_", "SITES_", "STATE_", "DOCKER_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CERTS_DIR", str(tmp_path / "certs"))
    monkeypatch.setenv("STATUS_PORT", "1")  # nothing listens there unless a test starts a server
    (tmp_path / "state").mkdir()
    return tmp_path


@pytest.fixture
def running(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[StatusBoard, FakeControls]]:
    board, controls = StatusBoard(), FakeControls()
    srv = StatusServer(OpsApp(board, Metrics(), env / "state", controls), "127.0.0.1", 0)
    srv.start()
    monkeypatch.setenv("STATUS_PORT", str(srv.port))
    monkeypatch.setenv("STATUS_ADDR", "0.0.0.0")  # the client then asks 127.0.0.1
    try:
        yield board, controls
    finally:
        srv.stop()


def _pass(board: StatusBoard, state_dir: Path) -> None:
    now = datetime.now(timezone.utc)
    runlogs.keep(state_dir, "a.example.com", 0, "Successfully received certificate.\n", now)
    board.snapshot(PassSnapshot(now, [SiteStatus(
        "a.example.com", ("a.example.com",), "container a", "ok", "valid", True,
        not_after=now + 90 * DAY, not_before=now, next_renewal=now + 60 * DAY)], [], {}))


def test_status_plan_renew_and_health_talk_to_the_running_sidecar(
        running: tuple[StatusBoard, FakeControls], env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board, controls = running
    assert cli.main(["health"]) == 1
    assert "unhealthy: starting" in capsys.readouterr().out
    _pass(board, env / "state")

    assert cli.main(["health"]) == 0
    assert capsys.readouterr().out.startswith("ok: last pass")
    assert cli.main(["health", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"

    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "a.example.com" in out and "(in 89d)" in out and "Successfully received certificate." in out
    assert cli.main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sites"][0]["site"] == "a.example.com"
    assert doc["sites"][0]["certbot_log"]["exit_code"] == 0

    assert cli.main(["plan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decisions"][0]["action"] == "issue"
    assert cli.main(["plan"]) == 0
    assert "issue: run certbot" in capsys.readouterr().out

    assert cli.main(["renew", "a.example.com", "--force"]) == 0
    assert capsys.readouterr().out.strip() == "site a.example.com: forced renewal requested"
    assert cli.main(["renew", "a.example.com", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == 202
    assert controls.requests == [("a.example.com", True), ("a.example.com", False)]
    assert cli.main(["renew", "nope.example.com"]) == 1
    assert "no site named 'nope.example.com'" in capsys.readouterr().err


def test_without_the_running_sidecar_status_and_health_read_the_status_file(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 2
    assert "there is no status file" in capsys.readouterr().err
    assert cli.main(["plan"]) == 2
    assert "plan needs the running sidecar" in capsys.readouterr().err
    assert cli.main(["health"]) == 1
    assert "no status yet" in capsys.readouterr().out

    now = datetime.now(timezone.utc)
    (env / "state" / "status.json").write_text(json.dumps({
        "updated": now.isoformat(),
        "sites": [{"name": "b.example.com", "domains": ["b.example.com"], "source": "sites file",
                   "state": "wait", "reason": "no certificate yet; back-off", "at": (now + DAY).isoformat(),
                   "live": False}],
        "problems": [], "rate_limit_budgets": {},
    }))
    (env / "state" / "ledger.json").write_text(json.dumps({
        "attempts": {"b.example.com": {"failures": 3, "last_error": "rejected"}}}))
    assert cli.main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "the sidecar does not answer on 127.0.0.1:1" in doc["note"]
    (row,) = doc["sites"]
    assert (row["site"], row["state"], row["failures"], row["last_error"]) == ("b.example.com", "wait", 3, "rejected")
    assert cli.main(["health"]) == 0
    assert "from the status file" in capsys.readouterr().out


def test_check_validates_the_sites_file_and_reports_docker_it_cannot_reach(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sites = env / "sites.yml"
    sites.write_text("sites:\n  - domains: [ok.example.com]\n    upstream: http://10.0.0.5:8080\n"
                     "  - domains: [bad_name!.example.com]\n    upstream: http://10.0.0.5:8080\n")
    monkeypatch.setenv("SITES_FILE", str(sites))
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert cli.main(["check", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [s["site"] for s in doc["sites"]] == ["ok.example.com"]
    assert len(doc["problems"]) == 1 and "bad_name" in doc["problems"][0]
    assert any(n.startswith("container labels not checked") for n in doc["notes"])
    assert doc["ok"] is False


# -- settings ------------------------------------------------------------------------
def test_status_and_alert_settings() -> None:
    s = settings.load({})
    assert (s.status_addr, s.status_port, s.alert_urls) == ("0.0.0.0", 9090, ())
    s = settings.load({"STATUS_ADDR": "127.0.0.1", "STATUS_PORT": "0",
                       "ALERT_URLS": "mailto://u:s3cretpw@smtp.example.com?to=a@example.com,b@example.com, "
                                     "json://hooks.example.com/x  tgram://tok/123"})
    assert (s.status_addr, s.status_port) == ("127.0.0.1", 0)
    assert s.alert_urls == ("mailto://u:s3cretpw@smtp.example.com?to=a@example.com,b@example.com",
                            "json://hooks.example.com/x", "tgram://tok/123")
    assert "s3cretpw" not in repr(s) and "alert_urls='***'" in repr(s)


@pytest.mark.parametrize(
    ("env", "words"),
    [({"STATUS_ADDR": "localhost"}, "STATUS_ADDR='localhost'"), ({"STATUS_PORT": "70000"}, "STATUS_PORT"),
     ({"ALERT_URLS": "json://ok/x, not a url s3cret"}, "ALERT_URLS: entry 1")],
)
def test_bad_status_and_alert_settings(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings.load(env)
    assert words in str(err.value) and "s3cret" not in str(err.value)
