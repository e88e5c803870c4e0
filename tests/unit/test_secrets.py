"""Secrets never leave: the EAB HMAC key, alert URL passwords and whatever is registered at run time
are redacted in every sink (logs, Docker errors, events, ledger, status file, the status server,
alerts). Each sink test feeds the same leaky text, as a failed exec used to produce it."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests.exceptions

from sidecar.adapters.docker_api import Docker
from sidecar.adapters.runner import RUN_SCRIPT
from sidecar.core import certbot, ratelimits
from sidecar.core import redact as redaction
from sidecar.core import settings as settings_mod
from sidecar.core.errors import DockerUnavailable
from sidecar.core.events import Event, Kind, Observers, PassSnapshot, SiteStatus
from sidecar.core.planner import Action, Attempt, Policy, plan
from sidecar.core.redact import MARKER, redact, redact_doc
from sidecar.core.schedule import Work
from sidecar.engine.reporter import Reporter
from sidecar.ops import cli
from sidecar.ops.httpserver import OpsApp, StatusBoard, StatusServer
from sidecar.ops.metrics import Metrics
from sidecar.ops.notify import Alerter, AlertPolicy, Dispatcher
from sidecar.state.ledger import Ledger

from .builders import NOW, site
from .test_loop import app, make

SECRET = "sEcReT-hmac-value-123"
KID = "kid-0123456789"
PASSWORD = "PaSsW0rd-xyz"
ALERT_URL = f"mailtos://alice:{PASSWORD}@smtp.example.com?to=ops@example.com"
# What an error used to carry: the exec'd command line, the key and a password quoted on their own.
LEAK = (f"exec sh -c ... certbot-run /tmp/run-1 120 certonly --eab-kid {KID} --eab-hmac-key {SECRET} failed: "
        f"Read timed out; the key {SECRET} was refused; SMTP login with {PASSWORD} failed for {ALERT_URL}")


def assert_clean(text: str) -> None:
    for secret in (SECRET, KID, PASSWORD):
        assert secret not in text
    assert MARKER in text


@pytest.fixture(autouse=True)
def cfg() -> Iterator[settings_mod.Settings]:
    """Settings with secrets, registered as at start-up; forgotten afterwards."""
    loaded = settings_mod.load({"ACME_EAB_KID": KID, "ACME_EAB_HMAC_KEY": SECRET, "ALERT_URLS": ALERT_URL})
    cli.register_secrets(loaded)
    try:
        yield loaded
    finally:
        redaction.clear()


# -- the registry ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"certbot --eab-kid {KID} --eab-hmac-key {SECRET} -d a", f"certbot --eab-kid {MARKER} --eab-hmac-key {MARKER} -d a"),
        ("--eab-hmac-key=unregistered-key --eab-kid=k1", f"--eab-hmac-key={MARKER} --eab-kid={MARKER}"),
        ("['--eab-hmac-key', 'unregistered-key', '-d']", f"['--eab-hmac-key', '{MARKER}', '-d']"),
        (f"key {SECRET}.", f"key {MARKER}."),
        (f"login {PASSWORD} refused", f"login {MARKER} refused"),
        ("see https://bob:other-pass@hook.example.com/x", f"see https://bob:{MARKER}@hook.example.com/x"),
        ("https://host.example.com:8443/a@b and http://:tok3n@h/", f"https://host.example.com:8443/a@b and http://:{MARKER}@h/"),
        ("nothing secret here: a.example.com", "nothing secret here: a.example.com"),
    ],
    ids=["flags", "flags-with-equals", "list-repr", "registered-key", "registered-password", "url-password",
         "no-password", "plain"],
)
def test_redact_replaces_registered_values_eab_flags_and_url_passwords(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


def test_empty_and_very_short_values_are_not_registered() -> None:
    for value in ("", None, "abc", "   "):
        redaction.register(value)
    assert redact("abc abc") == "abc abc"


def test_an_alert_url_registers_its_password_decoded_its_secret_parameters_and_tokens() -> None:
    redaction.register_url("mailtos://bob:p%40ss-w0rd@smtp.example.com?to=x@y.z&apikey=K3yK3yK3y&from=me")
    redaction.register_url("tgram://123456789:ABCdefGHIjklMNOpqr/4242")
    said = redact("p@ss-w0rd p%40ss-w0rd K3yK3yK3y 123456789:ABCdefGHIjklMNOpqr smtp.example.com me 4242")
    assert said == f"{MARKER} {MARKER} {MARKER} {MARKER} smtp.example.com me 4242"


def test_secrets_registered_at_run_time_are_redacted_from_then_on() -> None:
    assert redact("dns-token-AbC123xyz") == "dns-token-AbC123xyz"
    redaction.register("dns-token-AbC123xyz")  # a later DNS-01 credentials file, say
    assert redact("token dns-token-AbC123xyz") == f"token {MARKER}"


def test_documents_are_redacted_all_the_way_down_and_other_values_kept() -> None:
    doc = {"a": [LEAK, {"b": (SECRET, 3)}], SECRET: None, "at": NOW, "n": 1.5, "ok": True}
    clean = redact_doc(doc)
    assert_clean(json.dumps(clean, default=str))
    assert clean["at"] == NOW and clean["n"] == 1.5 and clean["ok"] is True and clean["a"][1]["b"][1] == 3


def test_registering_while_redacting_from_many_threads() -> None:
    values = [f"secret-{w}-{i:04d}" for w in range(4) for i in range(25)]

    def writer(w: int) -> None:
        for i in range(25):
            redaction.register(f"secret-{w}-{i:04d}")
            redact(f"x secret-{w}-{i:04d} {LEAK}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert redact(" ".join(values)) == " ".join([MARKER] * len(values))


def test_start_up_registers_the_eab_key_and_the_alert_url_password() -> None:
    assert redact(f"{SECRET} {PASSWORD} {ALERT_URL}") == f"{MARKER} {MARKER} {MARKER}"


# -- the sinks -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_and_tracebacks(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        cli.setup_logging(fmt, "INFO")
        log = logging.getLogger("sidecar.test")
        log.error("site %s: certificate request failed (transient): %s", "a.example.com", LEAK)
        log.warning(f"registering an ACME account failed ({LEAK})")
        try:
            raise DockerUnavailable(LEAK)
        except DockerUnavailable:
            log.exception("status server: GET /status failed")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    out = capsys.readouterr().out
    assert_clean(out)
    assert "a.example.com" in out and "DockerUnavailable" in out
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 3 and "exception" in lines[2]


class _SlowApi:
    """docker-py's low-level API whose exec never answers in time."""

    def exec_create(self, *_: Any, **__: Any) -> Any:
        raise requests.exceptions.ReadTimeout(
            "UnixHTTPConnectionPool(host='localhost', port=None): Read timed out. (read timeout=150)")


class _Client:
    api = _SlowApi()


def test_a_docker_exec_error_names_the_command_not_its_arguments(cfg: settings_mod.Settings) -> None:
    docker = Docker.__new__(Docker)  # no engine: the client is a fake
    docker._client = _Client()
    args = certbot.arguments(cfg, "a.example.com", ("a.example.com",), Action.ISSUE)
    assert SECRET in args  # the command does hold the key
    cmd = ["sh", "-c", RUN_SCRIPT, "certbot-run", "/tmp/run-0a1b2c", "120", *args]
    redaction.clear()  # not even the registry is needed: the arguments are left out
    with pytest.raises(DockerUnavailable) as raised:
        docker.exec("c" * 64, cmd)
    message = str(raised.value)
    assert SECRET not in message and KID not in message and "/tmp/run-0a1b2c" not in message
    assert message.startswith("exec certbot-run certonly failed: ") and "Read timed out" in message


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def event(self, event: Event) -> None:
        self.events.append(event)

    def snapshot(self, snap: PassSnapshot) -> None:
        pass


def test_an_event_is_redacted_before_any_observer_sees_it(cfg: settings_mod.Settings) -> None:
    seen = _Recorder()
    reporter = Reporter(cfg, lambda: NOW, Observers([seen]))
    reporter.emit(Kind.CERT_FAILED, "a.example.com", LEAK, failure="transient", error=LEAK,
                  argv=["--eab-hmac-key", SECRET], next_attempt=NOW, failures=2)
    (event,) = seen.events
    assert_clean(event.message)
    assert_clean(json.dumps(event.details, default=str))
    assert event.details["next_attempt"] == NOW and event.details["failures"] == 2 and event.site == "a.example.com"


def test_the_ledger_on_disk_keeps_no_secret(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    attempt = ledger.record_failure("a.example.com", ("a.example.com",), NOW, LEAK, None)
    ledger.save()
    assert_clean(attempt.last_error)
    assert_clean((tmp_path / "ledger.json").read_text())
    assert "Read timed out" in Ledger.load(tmp_path / "ledger.json").attempts["a.example.com"].last_error


class _TimingOutRunner:
    """The certbot runner when ``docker exec`` times out, with the message an exec error used to have."""

    def __init__(self) -> None:
        self.runs = 0

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, args: list[str], environment: Any, site: str) -> Any:
        self.runs += 1
        raise DockerUnavailable(f"exec sh -c ... {' '.join(args)} failed: Read timed out; {LEAK}")


def test_a_failed_run_leaves_no_secret_in_the_ledger_status_file_or_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimits, "registered_domain", lambda name: ".".join(name.split(".")[-2:]))
    r, _docker, _certbot, seen = make(tmp_path, [app("a", "a.example.com")], eab_kid=KID, eab_hmac_key=SECRET)
    runner = _TimingOutRunner()
    r.issuer.runner = runner
    r.run_pass()
    r.run_pass()  # waits (back-off): the status file says why, with the last error
    assert runner.runs == 1
    status = (r.settings.state_dir / "status.json").read_text()
    assert_clean(status)
    assert "last error" in status
    assert_clean((r.settings.state_dir / "ledger.json").read_text())
    (failed,) = [e for e in seen.events if e.kind == Kind.CERT_FAILED]
    assert_clean(failed.message)
    assert_clean(json.dumps(failed.details, default=str))


class _Controls:
    def preview(self) -> Work:
        attempt = Attempt(failures=1, last_failure=NOW, last_error=LEAK, domains=("a.example.com",))
        return Work(plan([site("a.example.com")], {}, {"a.example.com": attempt}, Policy(), NOW))

    def request_renewal(self, name: str, force: bool = False) -> str:
        return f"site {name}: requested"


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_status_plan_and_events_from_the_status_server_keep_no_secret(tmp_path: Path) -> None:
    board = StatusBoard()
    srv = StatusServer(OpsApp(board, Metrics(), tmp_path, _Controls()), "127.0.0.1", 0)
    srv.start()
    try:
        board.snapshot(PassSnapshot(NOW + timedelta(seconds=1), [
            SiteStatus("a.example.com", ("a.example.com",), "container a", "wait", f"back-off; last error: {LEAK}",
                       False, last_error=LEAK, failures=1)], [f"input problem: {LEAK}"], {}))
        srv.app.journal.event(Event(Kind.CERT_FAILED, NOW, "a.example.com", LEAK, {"error": LEAK}))
        bodies = {path: _get(srv.port, path) for path in ("/status", "/plan", "/events")}
    finally:
        srv.stop()
    for path, (code, body) in bodies.items():
        assert code == 200, path
        assert_clean(body)
        json.loads(body)


class _Target:
    name = "json://hook.example.com"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def send(self, title: str, body: str, level: str) -> bool:
        self.sent.append((title, body, level))
        return True


def test_an_alert_carries_no_secret() -> None:
    target = _Target()
    dispatcher = Dispatcher([target])
    alerter = Alerter(AlertPolicy(), dispatcher)
    alerter.event(Event(Kind.CERT_FAILED, NOW, "a.example.com", LEAK, {
        "failure": "transient", "error": LEAK, "next_attempt": NOW + timedelta(minutes=1), "failures": 1}))
    alerter.event(Event(Kind.CERT_FAILED, NOW, "b.example.com", LEAK, {"failure": f"x {SECRET}", "error": LEAK}))
    first, second = dispatcher.queue.get_nowait(), dispatcher.queue.get_nowait()
    for batch in ([first], [second], [first, second]):  # alone, and in one message
        dispatcher.deliver(batch)
    assert len(target.sent) == 3
    assert_clean(target.sent[1][0])  # the kind of failure is in the title
    for title, body, _level in target.sent:
        assert SECRET not in title and PASSWORD not in title
        assert_clean(body)


def test_a_kept_certbot_log_and_a_problem_in_the_status_file_keep_no_secret(tmp_path: Path) -> None:
    from sidecar.core.model import DesiredState, Problem
    from sidecar.core.settings import Settings
    from sidecar.engine.reporter import STATUS_FILE, Reporter
    from sidecar.state import runlogs

    redaction.register(SECRET)
    path = runlogs.keep(tmp_path, "a.example.com", 1, f"certbot certonly --eab-hmac-key {SECRET}\nboom\n", NOW)
    assert path is not None and SECRET not in path.read_text() and "boom" in path.read_text()
    reporter = Reporter(Settings(state_dir=tmp_path), lambda: NOW)
    reporter.status(DesiredState((), (Problem("label acme.x", f"bad value {SECRET}"),)), None, {}, set(), {}, {})
    text = (tmp_path / STATUS_FILE).read_text()
    assert SECRET not in text and "bad value" in text


def test_the_swarm_bundle_key_is_registered_when_read_and_never_echoed(tmp_path: Path) -> None:
    from sidecar.core.errors import ConfigError
    from sidecar.state.bundlefiles import read_key

    bundle_secret = "bundle-SeCrEt-0123456789abcdef"
    key_file = tmp_path / "sidecar_bundle_key"
    key_file.write_text(bundle_secret + "\n")
    read_key(key_file)
    assert redact(f"sealed with {bundle_secret}") == f"sealed with {MARKER}"
    short = tmp_path / "short"
    short.write_text("tiny-secret")
    with pytest.raises(ConfigError) as refused:
        read_key(short)
    assert "tiny-secret" not in str(refused.value) and "BUNDLE_KEY_FILE" in str(refused.value)
