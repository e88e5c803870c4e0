"""A real headless Chromium (Debian's ``chromium`` package), driven over the DevTools protocol.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on fd 3, answers on fd 4,
each a JSON message ending in NUL), so nothing but the standard library is needed and no port
is opened. Every console error, uncaught exception and failed load the page causes is collected
(``Browser.errors``): a test asserts there are none.

Chromium is started as the machine's tests are run (as root: ``--no-sandbox``) with no network
access of its own (no background requests, updates, sync or QUIC), and a fresh profile.
A missing Chromium is an error, never a skip: ``.ci/setup-browser.sh`` installs it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-pipe"]


def chromium_binary() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium not found: install Debian's chromium package (bash .ci/setup-browser.sh)")
    return found


class Browser:
    """One Chromium process with one page (tab); ``with Browser() as b: b.open(url)``."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width, self.height = width, height
        self.errors: list[str] = []     # console errors, exceptions, failed loads, CSP violations
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # Chromium wants the pipe as its fd 3 (commands in) and fd 4 (answers out): bash puts them there
        # (dash takes single-digit descriptors only).
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{res_w}', chromium_binary(), *FLAGS,
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(cmd_r, res_w))
        os.close(cmd_r)
        os.close(res_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.viewport(width, height)

    # -- protocol ---------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._res_r], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self._proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        if "method" in message:
            self._note(message)
        return message

    def _note(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        method, p = event["method"], event.get("params") or {}
        if method == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails") or {}
            self.errors.append(f"exception: {(details.get('exception') or {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args") or [])
            self.errors.append(f"console.{p.get('type')}: {args}")
        elif method == "Log.entryAdded" and (p.get("entry") or {}).get("level") in ("error", "warning"):
            entry = p["entry"]
            self.errors.append(f"log {entry.get('source')} {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            self.errors.append(f"load failed: {p.get('errorText')} ({p.get('blockedReason') or ''})")

    def call(self, method: str, session: bool = False, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline - time.monotonic())
            if answer is None:
                raise TimeoutError(f"no answer to {method} within {timeout}s")
            if answer.get("id") == ident:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result") or {}
                return result

    def wait_event(self, method: str, timeout: float = 30.0, where: Callable[[dict[str, Any]], bool] = lambda p: True,
                   since: int = 0) -> dict[str, Any]:
        """The first protocol event ``method`` (its params) after the ``since``-th one seen, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events[since:]:
                if event["method"] == method and where(event.get("params") or {}):
                    return dict(event.get("params") or {})
            if self._receive(max(deadline - time.monotonic(), 0)) is None and time.monotonic() >= deadline:
                raise TimeoutError(f"no {method} within {timeout}s")

    # -- what tests use ---------------------------------------------------------------
    def open(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` and wait for its load event."""
        since = len(self._events)
        result = self.call("Page.navigate", session=True, url=url)
        if result.get("errorText"):
            raise RuntimeError(f"cannot load {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout, since=since)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return (result.get("result") or {}).get("value")

    def wait_until(self, what: str, expression: str, timeout: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy (while collecting the page's events)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {value!r}")
            self._receive(0.2)

    def press(self, key: str, code: str, key_code: int) -> None:
        """A real key press (down and up), as a keyboard user makes it."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=code,
                      windowsVirtualKeyCode=key_code, nativeVirtualKeyCode=key_code)
        if key in (" ", "Enter"):
            self.call("Input.dispatchKeyEvent", session=True, type="char", text=" " if key == " " else "\r")

    def viewport(self, width: int, height: int, mobile: bool = False, scale: float = 1.0) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=scale, mobile=mobile)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page when ``full_page``) at the current viewport width."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._send({"id": 0, "method": "Browser.close"})
        except OSError:
            pass
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
