"""The status page: rendered from the /status and /events documents, escaped, redacted, served at /ui
and at / for browsers (JSON clients keep the endpoint list), and allowed only its own style and script."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest

from sidecar.core import redact as redaction
from sidecar.core.events import Event, Kind, PassSnapshot, SiteStatus
from sidecar.ops import statuspage
from sidecar.ops.httpserver import OpsApp, StatusBoard, StatusServer
from sidecar.ops.metrics import Metrics
from sidecar.ops.statuspage import lifetime_bar, relative, render_page

from ..support.net import http_get
from .builders import NOW

DAY = timedelta(days=1)


def row(site: str, **kw: Any) -> dict[str, Any]:
    base = {"site": site, "names": [site], "source": f"container {site}", "state": "ok", "live": True,
            "issuer": "Pebble Intermediate CA 1", "not_before": (NOW - DAY).isoformat(),
            "not_after": (NOW + 89 * DAY).isoformat(), "next": (NOW + 59 * DAY).isoformat(),
            "why": "valid until 2026-08-29 12:00 UTC", "last_error": "", "failures": 0, "certbot_log": None}
    return {**base, **kw}


FAILED = row("blocked.example", state="wait", live=False, not_before=None, not_after=None, issuer="",
             next=(NOW + timedelta(minutes=1)).isoformat(), failures=2,
             why="no certificate yet; back-off after 2 failures; last error: forbidden <b>by</b> policy",
             last_error="forbidden <b>by</b> policy",
             certbot_log={"path": "/var/lib/x/1.log", "exit_code": 1, "at": NOW.isoformat(), "last_line": "policy"})
STATUS = {"health": {"status": "degraded", "last_pass": NOW.isoformat(), "degraded": ["event stream lost"]},
          "sites": [row("a.example.com", names=["a.example.com", "www.a.example.com"]), FAILED,
                    row("mail.example.com", source="consumer container mail", live=False)],
          "problems": ["container bad label acme.port: 'x' is not a port"],
          "rate_limit_budgets": {"new_orders": 299}, "set_aside": {"broken.conf": "unknown directive"}}
EVENTS = [{"seq": 1, "kind": "reload", "at": NOW.isoformat(), "site": "", "message": "nginx reloaded",
           "details": {"written": ["sidecar-site-a.example.com.conf"], "removed": []}},
          {"seq": 2, "kind": "cert_failed", "at": NOW.isoformat(), "site": "blocked.example",
           "message": "forbidden <b>by</b> policy", "details": {}},
          {"seq": 3, "kind": "consumer_signalled", "at": NOW.isoformat(), "site": "mail.example.com",
           "message": "container mail: restart", "details": {}}]


def test_the_page_says_what_status_says_and_puts_failures_first() -> None:
    page = render_page(STATUS, EVENTS, NOW)
    sites = re.findall(r'<td data-label="Site"><strong>([^<]+)</strong>', page)
    assert sites == ["blocked.example", "a.example.com", "mail.example.com"]
    assert "also www.a.example.com" in page
    assert "waiting, 2 failures" in page and "certificate only (no vhost)" in page and "served over HTTPS" in page
    assert "Pebble Intermediate CA 1" in page and "renewal planned" in page
    assert "Degraded: event stream lost" in page and "Input problem: container bad label" in page
    assert "Set aside: broken.conf (unknown directive)" in page
    assert "<dt>new_orders</dt><dd>299</dd>" in page
    assert "1 file written (sidecar-site-a.example.com.conf), 0 removed" in page
    assert "consumer told" in page and "certificate request failed" in page
    assert "<title>nginx-acme-sidecar: 3 sites, 1 failing, degraded</title>" in page


def test_everything_from_outside_is_escaped() -> None:
    page = render_page(STATUS, EVENTS, NOW)
    assert "<b>by</b>" not in page and "forbidden &lt;b&gt;by&lt;/b&gt; policy" in page


def test_only_its_own_inline_style_and_script_are_allowed_and_nothing_is_loaded_from_elsewhere() -> None:
    page = render_page(STATUS, EVENTS, NOW)
    policy = statuspage.CONTENT_SECURITY_POLICY
    for tag in ("style", "script"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert " style=" not in page and not re.search(r'(?:src|href)="(?!/|data:)', page)


@pytest.mark.parametrize(("delta", "text"), [(timedelta(0), "now"), (timedelta(seconds=45), "in 45s"),
                                             (-timedelta(minutes=3), "3m ago"), (59 * DAY + timedelta(hours=5), "in 59d"),
                                             (-timedelta(hours=2), "2h ago")],
                         ids=["now", "seconds", "minutes-ago", "days", "hours-ago"])
def test_relative_times(delta: timedelta, text: str) -> None:
    assert relative(NOW + delta, NOW) == text


@pytest.mark.parametrize(
    ("used_days", "renew_in", "tone"),
    [(10, 50, ""), (70, -10, "warn"), (80, -20, "bad")],
    ids=["fresh", "renewal-overdue", "sixth-left"],
)
def test_the_lifetime_bar_shows_the_part_used_and_turns_amber_then_red(used_days: int, renew_in: int,
                                                                        tone: str) -> None:
    r = row("a", not_before=(NOW - used_days * DAY).isoformat(), not_after=(NOW + (90 - used_days) * DAY).isoformat(),
            next=(NOW + renew_in * DAY).isoformat())
    bar = lifetime_bar(r, NOW)
    assert f'class="used {tone}" width="{round(used_days / 90 * 100, 1)}"' in bar
    assert f"{used_days / 90:.0%} of its lifetime used" in bar and "renewal planned" in bar
    assert lifetime_bar(row("b", not_after=None), NOW) == '<span class="muted">no certificate</span>'


# -- served ------------------------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[tuple[int, StatusBoard, OpsApp]]:
    board = StatusBoard(clock=lambda: NOW)
    app = OpsApp(board, Metrics(), clock=lambda: NOW)
    srv = StatusServer(app, "127.0.0.1", 0)
    srv.start()
    try:
        yield srv.port, board, app
    finally:
        srv.stop()
        redaction.clear()


def _get(port: int, path: str, accept: str | None = None) -> tuple[int, dict[str, str], str]:
    return http_get(port, "127.0.0.1", path, headers={"Accept": accept} if accept else None)


@pytest.mark.parametrize(
    ("path", "accept", "html"),
    [("/ui", None, True), ("/", "text/html,application/xhtml+xml,*/*;q=0.8", True), ("/", None, False),
     ("/", "application/json", False), ("/", "*/*", False)],
    ids=["ui", "browser", "no-accept", "json", "curl"],
)
def test_browsers_get_the_page_and_json_clients_the_endpoint_list(server: tuple[int, StatusBoard, OpsApp],
                                                                  path: str, accept: str | None, html: bool) -> None:
    port, board, _ = server
    board.snapshot(PassSnapshot(NOW, [], []))
    status, headers, body = _get(port, path, accept)
    assert status == 200
    if html:
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-security-policy"] == statuspage.CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff" and body.startswith("<!doctype html>")
    else:
        assert headers["content-type"] == "application/json" and '"/ui"' in body


def test_the_page_is_redacted_and_shows_the_journal(server: tuple[int, StatusBoard, OpsApp]) -> None:
    port, board, app = server
    redaction.register("s3cr3t-hmac-key")
    board.snapshot(PassSnapshot(NOW, [SiteStatus("a.example.com", ("a.example.com",), "container a", "wait", "x",
                                                 False, last_error="refused key s3cr3t-hmac-key", failures=1)], []))
    app.journal.event(Event(Kind.CERT_FAILED, NOW, "a.example.com", "refused key s3cr3t-hmac-key"))
    _, _, body = _get(port, "/ui")
    assert "s3cr3t-hmac-key" not in body and "refused key [redacted]" in body
    assert body.count(">certificate request failed</span>") == 1  # (the event)
