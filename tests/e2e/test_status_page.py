"""The status page (issue 18) in a real headless Chromium (Debian's), against the running demo.

A site is issued just before the page is opened (``fresh.demo.test``) and one fails
(``blocked-domain.example``, which the demo's Pebble refuses by policy). The page must load with
no console error, no failed request and no Content-Security-Policy violation, show every site of
``/status`` with the issued one served and the failed one's error, refresh itself, work from the
keyboard and fit a phone's width. Screenshots go to ``.artifacts/`` (``E2E_SCREENSHOTS=docs`` writes
the README's ``docs/status-page.png`` instead).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator

import pytest

from sidecar.core.events import Kind

from ..support.chromium import Browser
from ..support.net import http_get
from .stack import ARTIFACTS, ROOT, Stack, wait_for

FRESH = "fresh.demo.test"
BLOCKED = "blocked-domain.example"
SHOTS = ROOT / os.environ["E2E_SCREENSHOTS"] if os.environ.get("E2E_SCREENSHOTS") else ARTIFACTS
APP = {"acme.port": "5678"}

ROWS = """Array.from(document.querySelectorAll('section[aria-labelledby="h-sites"] tbody tr')).map(tr => ({
  site: tr.cells[0].innerText, state: tr.cells[2].innerText, cert: tr.cells[3].innerText,
  next: tr.cells[4].innerText, error: tr.cells[5].innerText}))"""
EVENTS = """Array.from(document.querySelectorAll('section[aria-labelledby="h-events"] tbody tr')).map(tr => ({
  what: tr.cells[1].innerText, site: tr.cells[2].innerText}))"""


@pytest.fixture(scope="module")
def issued_and_failed(stack: Stack) -> Iterator[dict[str, Any]]:
    """One site just issued, one failed; the status rows of both. Their containers go afterwards."""
    since = stack.cursor()
    apps = [stack.run_app("page-fresh", {"acme.domains": FRESH, **APP}, "fresh"),
            stack.run_app("page-blocked", {"acme.domains": BLOCKED, **APP}, "blocked")]
    stack.wait_event(Kind.SITE_LIVE, FRESH, since, timeout=90)
    failed = stack.wait_event(Kind.CERT_FAILED, BLOCKED, since, timeout=90)
    rows = wait_for("both in /status", lambda: (r := stack.status()["rows"]).get(FRESH, {}).get("live")
                    and r.get(BLOCKED, {}).get("failures") and r, timeout=30)
    yield {"rows": rows, "failed": failed}
    since = stack.cursor()
    for app in apps:
        app.remove(force=True)
    for name in (FRESH, BLOCKED):
        stack.wait_event(Kind.SITE_REMOVED, name, since, timeout=30)


def _health(stack: Stack) -> str:
    """``/healthz``'s verdict (ok, degraded; 503 would be unhealthy)."""
    status, _, body = _get(stack, "/healthz", None)
    return str(json.loads(body)["status"])


def url(stack: Stack, path: str = "/") -> str:
    return f"http://127.0.0.1:{stack.env['STATUS_PORT_HOST']}{path}"


def test_the_page_shows_every_site_the_issued_and_the_failed_one_without_a_console_error(
        stack: Stack, issued_and_failed: dict[str, Any]) -> None:
    with Browser(1280, 1060) as browser:
        browser.open(url(stack))  # (a browser asks for text/html: "/" is the page)
        assert browser.evaluate("document.contentType") == "text/html"
        rows = {r["site"].split("\n")[0]: r for r in browser.evaluate(ROWS)}
        status = stack.status()["rows"]
        assert set(rows) == set(status)

        fresh, expires = rows[FRESH], status[FRESH]["not_after"][:10]
        assert fresh["state"].startswith("OK") and "served over HTTPS" in fresh["state"]
        assert "Pebble Intermediate CA" in fresh["cert"] and f"expires {expires}" in fresh["cert"]
        assert fresh["error"] == "–"

        blocked = rows[BLOCKED]
        assert "failure" in blocked["state"] and "not served yet" in blocked["state"]
        assert "forbidden by policy" in blocked["error"] and "certbot exit 1" in blocked["error"]
        assert status[BLOCKED]["next"][:16].replace("T", " ") in blocked["next"]
        attention = browser.evaluate("document.querySelector('ul.attention').innerText")
        assert f"{BLOCKED}: certificate request failed" in attention

        events = browser.evaluate(EVENTS)
        assert {"what": "certificate issued", "site": FRESH} in events
        assert {"what": "certificate request failed", "site": BLOCKED} in events
        assert browser.evaluate("document.querySelector('#health .badge').innerText") == _health(stack)
        shot = browser.screenshot(SHOTS / "status-page.png", full_page=False)

        # It refreshes itself (the content is replaced, errors none).
        browser.evaluate("document.getElementById('main').dataset.before = '1'")
        browser.wait_until("the page refreshing itself", "!document.getElementById('main').dataset.before",
                           timeout=20)
        # From the keyboard: the first Tab reaches the one control, Space presses it.
        browser.press("Tab", "Tab", 9)
        assert browser.evaluate("document.activeElement.id") == "pause"
        browser.press(" ", "Space", 32)
        assert browser.evaluate("document.getElementById('pause').getAttribute('aria-pressed')") == "true"
        # On a phone: one card per site, nothing wider than the screen.
        browser.viewport(390, 844, mobile=True, scale=2)
        assert browser.evaluate("document.documentElement.scrollWidth <= innerWidth")
        assert browser.evaluate("getComputedStyle(document.querySelector('table.sites td')).display") == "block"
        browser.screenshot(SHOTS / "status-page-phone.png", full_page=False)
        assert browser.errors == []
    assert shot.stat().st_size > 10_000


def _get(stack: Stack, path: str, accept: str | None) -> tuple[int, dict[str, str], str]:
    return http_get(int(stack.env["STATUS_PORT_HOST"]), "127.0.0.1", path, headers={"Accept": accept} if accept else None)


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"], ids=["no-accept", "json", "any"])
def test_clients_that_do_not_ask_for_html_still_get_the_json_index(stack: Stack, accept: str | None) -> None:
    status, headers, body = _get(stack, "/", accept)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert "/ui" in json.loads(body)["endpoints"]


def test_the_page_is_at_ui_for_everyone_and_allows_only_its_own_style_and_script(stack: Stack) -> None:
    status, headers, body = _get(stack, "/ui", None)
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'sha256-")
    assert not re.search(r'(?:src|href)="(?!/|data:)', body)  # nothing loaded from elsewhere

