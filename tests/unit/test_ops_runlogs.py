"""certbot run logs kept per site, and operator renewals reaching the loop."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.state import runlogs

from sidecar.core import settings
from sidecar.core.planner import Attempt
from sidecar.engine.loop import Reconciler

from .builders import NOW, site

SEC = timedelta(seconds=1)


def test_keeps_the_last_five_runs_per_site_newest_last(tmp_path: Path) -> None:
    for i in range(7):
        runlogs.keep(tmp_path, "a.example.com", i % 2, f"run {i}\n", NOW + i * SEC)
    runlogs.keep(tmp_path, "b.example.com", None, "still going\n", NOW)
    files = sorted(p.name for p in (tmp_path / "certbot-logs" / "a.example.com").iterdir())
    assert files == [f"20260601T1200{i:02d}.000000Z-{i % 2}.log" for i in range(2, 7)]
    latest = runlogs.latest(tmp_path, "a.example.com")
    assert latest is not None
    assert (latest.at, latest.exit_code, latest.last_line) == (NOW + 6 * SEC, 0, "run 6")
    assert latest.path.read_text() == "run 6\n"
    b = runlogs.latest(tmp_path, "b.example.com")
    assert b is not None and b.exit_code is None and b.path.name.endswith("-timeout.log")
    assert runlogs.latest(tmp_path, "c.example.com") is None


@pytest.mark.parametrize(
    ("output", "line"),
    [
        ("Saving debug log to /var/log/letsencrypt/letsencrypt.log\nRequesting a certificate for a.example.com\n"
         "Certbot failed to authenticate some domains (authenticator: webroot).\n"
         "  Detail: 203.0.113.5: Invalid response from http://a.example.com/.well-known/acme-challenge/x: 404\n\n"
         "Hint: The Certificate Authority failed to download the temporary challenge files.\n\n"
         "Some challenges have failed.\n"
         "Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile x.\n",
         "Some challenges have failed."),
        ("Successfully received certificate.\nCertificate is saved at: /etc/letsencrypt/live/a/fullchain.pem\n"
         "Key is saved at:         /etc/letsencrypt/live/a/privkey.pem\nThis certificate expires on 2027-02-24.\n"
         "These files will be updated when the certificate renews.\n\nNEXT STEPS:\n"
         "- The certificate will need to be renewed before it expires. Certbot can automatically renew\n\n"
         "- - - - - - - - - - - - - - - - -\nIf you like Certbot, please consider supporting our work by:\n"
         " * Donating to ISRG / Let's Encrypt:   https://letsencrypt.org/donate\n",
         "This certificate expires on 2027-02-24."),
        ("", ""),
        ("Ask for help\n", "Ask for help"),
    ],
    ids=["failure", "success", "empty", "only-boilerplate"],
)
def test_last_line_skips_certbot_boilerplate(output: str, line: str) -> None:
    assert runlogs.last_line(output) == line


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", ".hidden"])
def test_unsafe_site_names_are_not_paths(tmp_path: Path, name: str) -> None:
    assert runlogs.keep(tmp_path, name, 0, "x", NOW) is None
    assert runlogs.latest(tmp_path, name) is None
    assert not (tmp_path / "certbot-logs").exists() or not any((tmp_path / "certbot-logs").rglob("*.log"))


def test_an_unwritable_state_dir_is_a_warning_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "certbot-logs").write_text("not a directory")
    assert runlogs.keep(tmp_path, "a.example.com", 1, "x", NOW) is None
    assert "cannot keep the certbot output" in caplog.text


# -- renew requests ---------------------------------------------------------------------
def _reconciler(tmp_path: Path, docker: object = None) -> Reconciler:
    cfg = settings.load({"STATE_DIR": str(tmp_path), "CERTS_DIR": str(tmp_path / "certs"), "RATE_LIMITS": "off"})
    r = Reconciler(cfg, docker=docker, clock=lambda: NOW)  # type: ignore[arg-type]
    r.reporter.said.sites = {"a.example.com": site("a.example.com")}  # as if a pass had seen it
    return r


def test_renew_clears_our_back_off_forces_when_asked_and_wakes_the_loop(tmp_path: Path) -> None:
    r = _reconciler(tmp_path)
    r.ledger.attempts["a.example.com"] = Attempt(failures=3, last_failure=NOW, last_error="boom",
                                                 domains=("a.example.com",), not_before=NOW + timedelta(hours=1))
    message = r.request_renewal("a.example.com")
    assert "renewal check requested" in message
    attempt = r.ledger.attempts["a.example.com"]
    # Our own back-off is gone; the failure count, the error and the CA's retry-after stay.
    assert (attempt.failures, attempt.last_failure, attempt.last_error) == (3, None, "boom")
    assert attempt.not_before == NOW + timedelta(hours=1)
    assert r.issuer.forced == set()
    assert r.triggers.pending
    assert "last_failure\": null" in (tmp_path / "ledger.json").read_text()

    r.request_renewal("a.example.com", force=True)
    assert r.issuer.forced == {"a.example.com"}
    (decision,) = r.preview().plan.decisions
    # the CA's retry-after still holds (no certificate on disk here: it would issue)
    assert (decision.action.value, decision.pending.value if decision.pending else None) == ("wait", "issue")


def test_renew_of_an_unknown_site_is_refused(tmp_path: Path) -> None:
    r = _reconciler(tmp_path)
    with pytest.raises(KeyError):
        r.request_renewal("nope.example.com", force=True)
    assert r.issuer.forced == set() and not r.triggers.pending


def test_preview_plans_without_running_anything(tmp_path: Path) -> None:
    calls: list[Any] = []
    r = _reconciler(tmp_path, docker=type("NoDocker", (), {"__getattr__": lambda self, name: calls.append(name)})())
    r.issuer.forced.add("a.example.com")
    (decision,) = r.preview().plan.decisions
    assert decision.action.value == "issue"  # no certificate: issue, forced or not
    assert calls == []
