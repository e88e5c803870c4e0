"""Ports, polling and HTTPS requests for the end-to-end tests and the benchmarks.

Everything runs against 127.0.0.1: the stacks publish their ports there only.
"""

from __future__ import annotations

import http.client
import socket
import threading
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable

from cryptography import x509


_GIVEN: set[int] = set()  # ports handed out in this process (stacks come up in parallel)
_GIVEN_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now, and not handed out before in this
    process: stacks started side by side publish their ports only later, and the kernel may
    offer a port again as soon as the socket that found it is closed."""
    with _GIVEN_LOCK:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port


class Fatal(Exception):
    """Raised by a ``wait_for`` check: stop waiting at once (the thing waited for died)."""


class TimedOut(AssertionError):
    """``wait_for`` gave up."""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy and return that; errors count as
    "not yet" (except ``Fatal``). Raises ``TimedOut`` with the last answer or error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except Fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - polling until it works
            last = exc
        if time.monotonic() >= deadline:
            raise TimedOut(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def stays(what: str, happened: Callable[[], Any], deadline: float, interval: float = 0.1) -> None:
    """A "nothing happened" check: poll ``happened`` until ``deadline`` seconds have passed,
    and fail as soon as it returns something truthy (``what`` says what should not happen)."""
    end = time.monotonic() + deadline
    while True:
        seen = happened()
        if seen:
            raise AssertionError(f"{what}: {seen!r}")
        if time.monotonic() >= end:
            return
        time.sleep(interval)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: str
    cert: x509.Certificate   # what the server presented


def tls_context(ca: str) -> ssl.SSLContext:
    """Verifies against the PEM certificate(s) in ``ca`` only."""
    return ssl.create_default_context(cadata=ca)


def tls_get(port: int, sni: str, path: str = "/", ca: str | ssl.SSLContext = "", timeout: float = 5.0) -> Response:
    """GET https://<sni><path> through 127.0.0.1:<port>, with SNI and Host ``sni``, verified
    against ``ca`` (PEM text, or a context made once with ``tls_context`` for many requests)."""
    ctx = ca if isinstance(ca, ssl.SSLContext) else tls_context(ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout)
    try:
        sock = ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise
    with sock:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        conn = http.client.HTTPSConnection(sni, port, timeout=timeout, context=ctx)
        conn.sock = sock
        status, headers, body = _get(conn, sni, path)
    return Response(status, headers, body, x509.load_der_x509_certificate(der))


def http_get(port: int, host: str, path: str = "/", timeout: float = 5.0,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET http://<host><path> through 127.0.0.1:<port>: (status, headers in lower case, body)."""
    return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=timeout), host, path, headers)


def _get(conn: http.client.HTTPConnection, host: str, path: str,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
