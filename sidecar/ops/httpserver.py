"""The sidecar's own small HTTP server (``STATUS_ADDR``:``STATUS_PORT``, default 0.0.0.0:9090).

Never published through nginx; reachable inside the container (Docker's
HEALTHCHECK, ``docker compose exec sidecar python3 -m sidecar status``) and from
containers on the sidecar's networks (Prometheus).

==========================  =================================================================
``GET /ui``                 the status page: one HTML page for people (``statuspage``); also ``GET /``
                            when the client asks for HTML (a browser), else ``/`` lists the endpoints (JSON)
``GET /healthz``            200 when the last pass finished recently and Docker answered; else 503
``GET /metrics``            Prometheus text format (see ``metrics``)
``GET /status``             sites, certificates, next renewal and why, errors, certbot logs (JSON)
``GET /plan``               what the next pass would do now, without doing it (JSON)
``GET /events?since=N``     the events after number N, oldest first, and the number to ask from next (JSON)
``POST /renew/<site>``      retry now (``?force=1``: renew even if not due); from loopback only
==========================  =================================================================

``StatusBoard`` is the ``Observer`` that remembers the latest pass, ``EventJournal``
the one that keeps the latest events, numbered; the documents are built by pure
functions so they can be tested without a server.
"""

from __future__ import annotations

import json
import logging
import socket
import enum
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Mapping, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from sidecar.state import runlogs
from sidecar.core.events import Event, Kind, PassSnapshot, SiteStatus
from sidecar.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from sidecar.ops import statuspage
from sidecar.core.planner import Plan
from sidecar.core.health import HEALTH_MAX_AGE, assess
from sidecar.core.names import iso as _iso, utcnow
from sidecar.core.redact import redact_doc
from sidecar.core.schedule import Work

T = TypeVar("T")
log = logging.getLogger("sidecar")

CERTBOT_ACTIONS = ("issue", "expand", "rekey", "renew")
# How many events ``GET /events`` can look back on (a burst of 100 sites makes about 500).
JOURNAL_SIZE = 1000
PAGE_HEADERS = {"Content-Security-Policy": statuspage.CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class StatusBoard:
    """Observer: the latest pass snapshot, and whether Docker answered on the last pass."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self.started = clock()
        self.last: PassSnapshot | None = None
        self.docker_ok = True
        self.docker_error = ""
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        if event.kind == Kind.DOCKER_UNAVAILABLE:
            with self._lock:
                self.docker_ok, self.docker_error = False, event.message

    def snapshot(self, snap: PassSnapshot) -> None:
        with self._lock:
            self.last, self.docker_ok, self.docker_error = snap, True, ""

    def state(self) -> tuple[PassSnapshot | None, bool, str]:
        with self._lock:
            return self.last, self.docker_ok, self.docker_error


class EventJournal:
    """Observer: the latest ``JOURNAL_SIZE`` events, numbered 1, 2, 3... in the order they came.

    A client asks for the events after the last number it saw (``GET /events?since=N``).
    Numbers start at 1 again when the process starts; ``started`` tells the runs apart.
    """

    def __init__(self, size: int = JOURNAL_SIZE, clock: Callable[[], datetime] = utcnow) -> None:
        self.started = clock()
        self._events: deque[tuple[int, Event]] = deque(maxlen=size)
        self._last = 0
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        with self._lock:
            self._last += 1
            self._events.append((self._last, event))

    def snapshot(self, snap: PassSnapshot) -> None:
        pass  # passes are the StatusBoard's business

    def since(self, seq: int) -> tuple[list[tuple[int, Event]], int, int]:
        """The events numbered above ``seq``, the number of the latest one, and how many of
        those after ``seq`` are no longer kept."""
        with self._lock:
            kept = [(n, e) for n, e in self._events if n > seq]
            first = self._events[0][0] if self._events else self._last + 1
            return kept, self._last, max(0, first - 1 - max(seq, 0))


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot hold made plain: times as ISO 8601, enums as their value,
    paths and anything unknown as text, tuples and sets as lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(v) for v in value), key=str)
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def event_row(seq: int, event: Event) -> dict[str, Any]:
    return {"seq": seq, "kind": event.kind.value, "at": event.at.isoformat(), "site": event.site,
            "message": event.message, "details": json_safe(event.details)}


def events_document(journal: EventJournal, since: int) -> dict[str, Any]:
    """``GET /events?since=N``: ``next`` is the ``since`` to ask with next time."""
    kept, last, missed = journal.since(since)
    return {"events": [event_row(n, e) for n, e in kept], "next": last, "missed": missed,
            "started": journal.started.isoformat()}


def health(last: PassSnapshot | None, docker_ok: bool, docker_error: str, now: datetime,
           max_age: timedelta = HEALTH_MAX_AGE) -> tuple[bool, dict[str, Any]]:
    """Liveness and readiness in one: a recent pass, and Docker reachable on the last one."""
    return assess(last.at if last else None, len(last.sites) if last else 0, docker_ok, docker_error, now, max_age,
                  degraded=last.degraded if last else ())


def site_row(s: SiteStatus, at: datetime, run: runlogs.RunLog | None) -> dict[str, Any]:
    """One row of ``status``: the site, its certificate, what comes next and why."""
    next_at = s.next_renewal or s.next_attempt or (at if s.state in CERTBOT_ACTIONS else None)
    return {
        "site": s.name,
        "names": list(s.domains),
        "source": s.source,
        "state": s.state,
        "live": s.live,
        "issuer": s.issuer,
        "not_before": _iso(s.not_before),
        "not_after": _iso(s.not_after),
        "expires_in_days": round((s.not_after - at).total_seconds() / 86400, 1) if s.not_after else None,
        "next": _iso(next_at),
        "why": s.reason,
        "last_error": s.last_error,
        "failures": s.failures,
        "certbot_log": None if run is None else {
            "path": str(run.path), "at": _iso(run.at), "exit_code": run.exit_code, "last_line": run.last_line,
        },
    }


@dataclass(frozen=True)
class Page:
    """``?q=TEXT&offset=N&limit=N`` on ``/status`` and ``/plan``: the sites whose name or names
    contain TEXT, from the N-th, at most N (all by default)."""

    q: str = ""
    offset: int = 0
    limit: int | None = None

    @classmethod
    def parse(cls, query: str) -> "Page":
        """Raises ValueError with a message for the client."""
        args = parse_qs(query)
        numbers: dict[str, int | None] = {"offset": 0, "limit": None}
        for key in numbers:
            raw = args.get(key, [""])[-1]
            if raw:
                if not raw.isdigit():
                    raise ValueError(f"{key}={raw!r}: expected a whole number")
                numbers[key] = int(raw)
        return cls(args.get("q", [""])[-1].strip().lower(), numbers["offset"] or 0, numbers["limit"])

    def select(self, items: list[T], names: Callable[[T], Iterable[str]]) -> tuple[list[T], dict[str, Any]]:
        matched = [x for x in items if any(self.q in n for n in names(x))] if self.q else items
        end = None if self.limit is None else self.offset + self.limit
        return matched[self.offset:end], {"total": len(items), "matched": len(matched), "offset": self.offset,
                                          "limit": self.limit, "q": self.q}


def status_document(last: PassSnapshot | None, state_dir: Path | None, now: datetime,
                    healthy: tuple[bool, dict[str, Any]], page: Page = Page()) -> dict[str, Any]:
    sites = []
    shown, paging = page.select(sorted(last.sites, key=lambda s: s.name) if last is not None else [],
                                lambda s: (s.name, *s.domains))
    if last is not None:
        for s in shown:
            run = runlogs.latest(state_dir, s.name) if state_dir is not None else None
            sites.append(site_row(s, last.at, run))
    return {
        "updated": _iso(last.at) if last else None,
        "now": now.isoformat(),
        "health": healthy[1],
        "page": paging,
        "sites": sites,
        "problems": list(last.problems) if last else [],
        "rate_limit_budgets": dict(last.budgets) if last else {},
        "set_aside": dict(last.set_aside) if last else {},
    }


def plan_document(the_plan: Plan, now: datetime, postponed: Mapping[str, datetime | None],
                  forced: frozenset[str] = frozenset(), page: Page = Page(),
                  queued: Mapping[str, tuple[datetime, str]] | None = None,
                  last_request_at: datetime | None = None) -> dict[str, Any]:
    """The planner's decisions as the next pass would take them now; ``queued``: new orders that
    wait for budgets the ones before them use up (when, which limit); ``last_request_at``: when
    the last certificate asked for can be requested under the CA's limits."""
    rows = []
    queued = queued or {}
    shown, paging = page.select(list(the_plan.decisions), lambda d: (d.site.name, *d.site.domains))
    for d in shown:
        rows.append({
            "site": d.site.name,
            "names": list(d.site.domains),
            "source": d.site.source,
            "action": d.action.value,
            "runs_certbot": d.needs_certbot,
            "reason": d.reason,
            "at": _iso(d.at),
            "pending": d.pending.value if d.pending else None,
            "forced": d.site.name in forced,
            "postponed_until": _iso(postponed[d.site.name]) if d.needs_certbot and postponed.get(d.site.name)
            else _iso(queued[d.site.name][0]) if d.site.name in queued else None,
            "waits_for": queued[d.site.name][1] if d.site.name in queued else None,
        })
    to_request = sum(1 for d in the_plan.decisions if d.needs_certbot)
    return {"now": now.isoformat(), "next_wakeup": _iso(the_plan.next_wakeup), "page": paging,
            "certificates_to_request": to_request, "queued_for_rate_limits": len(queued),
            "last_request_at": _iso(last_request_at) if to_request else None, "decisions": rows}


class Controls(Protocol):
    """What the server needs from the reconciler."""

    def preview(self) -> Work: ...

    def request_renewal(self, name: str, force: bool = False) -> str: ...


@dataclass
class OpsApp:
    board: StatusBoard
    metrics: Metrics
    state_dir: Path | None = None
    controls: Controls | None = None
    clock: Callable[[], datetime] = utcnow
    max_age: timedelta = HEALTH_MAX_AGE
    # register it with the reconciler's observers (``reconciler.observers.add(app.journal)``)
    journal: EventJournal = field(default_factory=EventJournal)
    # Docker Swarm issuer: each node's bundle state, and the webroot whose challenges every node's nginx forwards
    nodes: Callable[[], list[dict[str, Any]]] | None = None
    webroot: Path | None = None

    def challenge(self, token: str) -> tuple[int, bytes]:
        if self.webroot is None or not token or "/" in token or token.startswith("."):
            return 404, b"not found\n"
        try:
            return 200, (self.webroot / ".well-known" / "acme-challenge" / token).read_bytes()
        except OSError:
            return 404, b"not found\n"

    def healthz(self) -> tuple[int, dict[str, Any]]:
        last, docker_ok, error = self.board.state()
        ok, doc = health(last, docker_ok, error, self.clock(), self.max_age)
        return (200 if ok else 503), doc

    def status(self, query: str = "") -> tuple[int, dict[str, Any]]:
        try:
            page = Page.parse(query)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        last, docker_ok, error = self.board.state()
        now = self.clock()
        doc = status_document(last, self.state_dir, now, health(last, docker_ok, error, now, self.max_age), page)
        if self.nodes is not None:
            doc["nodes"] = self.nodes()
        return 200, doc

    def page(self) -> str:
        """The status page (HTML) from the same documents as ``/status`` and ``/events``, secrets redacted."""
        _, status = self.status()
        events = events_document(self.journal, 0)["events"]
        return statuspage.render_page(redact_doc(status), redact_doc({"e": events})["e"], self.clock())

    def plan(self, query: str = "") -> tuple[int, dict[str, Any]]:
        try:
            page = Page.parse(query)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if self.controls is None:
            return 503, {"error": "no reconciler"}
        if self.board.state()[0] is None:
            return 503, {"error": "starting: no reconcile pass has finished yet"}
        work = self.controls.preview()
        postponed = {name: verdict.frees_at for name, verdict in work.postponed.items()}
        return 200, plan_document(work.plan, self.clock(), postponed, work.forced, page, work.queued,
                                  work.last_request_at)

    def events(self, query: str) -> tuple[int, dict[str, Any]]:
        raw = parse_qs(query).get("since", ["0"])[-1]
        try:
            since = int(raw)
        except ValueError:
            return 400, {"error": f"since={raw!r}: expected the number of the last event seen (0 for all)"}
        return 200, events_document(self.journal, since)

    def renew(self, name: str, force: bool) -> tuple[int, dict[str, Any]]:
        if self.controls is None:
            return 503, {"error": "no reconciler"}
        try:
            message = self.controls.request_renewal(name, force)
        except KeyError:
            return 404, {"error": f"no site named {name!r} (site names are the first domain of each site)"}
        return 202, {"message": message, "site": name, "force": force}


def _handler(app: OpsApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "nginx-acme-sidecar"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("status server: %s %s", self.client_address[0], format % args)

        def _send(self, code: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, doc: Mapping[str, Any]) -> None:
            """Every JSON answer, secrets redacted (errors and certbot log lines may quote them)."""
            self._send(code, (json.dumps(redact_doc(dict(doc)), indent=1) + "\n").encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            try:
                if path.startswith("/.well-known/acme-challenge/"):
                    code, body = app.challenge(path.removeprefix("/.well-known/acme-challenge/"))
                    self._send(code, body, "text/plain")
                elif path == "/healthz":
                    self._json(*app.healthz())
                elif path == "/metrics":
                    self._send(200, app.metrics.render(), METRICS_CONTENT_TYPE)
                elif path == "/status":
                    self._json(*app.status(url.query))
                elif path == "/plan":
                    self._json(*app.plan(url.query))
                elif path == "/events":
                    self._json(*app.events(url.query))
                elif path == "/ui" or (path == "/" and "text/html" in self.headers.get("Accept", "")):
                    self._send(200, app.page().encode(), "text/html; charset=utf-8", PAGE_HEADERS)
                elif path == "/":
                    self._json(200, {"endpoints": ["/ui", "/healthz", "/metrics",
                                                   "/status?q=&offset=&limit=", "/plan?q=&offset=&limit=",
                                                   "/events?since=N", "POST /renew/<site>[?force=1]"]})
                else:
                    self._json(404, {"error": f"no such endpoint: {path}"})
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the server thread
                log.exception("status server: GET %s failed", path)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        do_HEAD = do_GET  # noqa: N815

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if not url.path.startswith("/renew/"):
                self._json(404, {"error": f"no such endpoint: {url.path}"})
                return
            if not _is_local(str(self.client_address[0]), self.server.server_address):
                self._json(403, {"error": "renew is accepted from inside the sidecar container only: "
                                          "docker compose exec sidecar python3 -m sidecar renew NAME"})
                return
            name = unquote(url.path.removeprefix("/renew/")).strip("/")
            force = parse_qs(url.query).get("force", ["0"])[-1].lower() in ("1", "true", "yes")
            try:
                self._json(*app.renew(name, force))
            except Exception as exc:  # noqa: BLE001
                log.exception("status server: POST %s failed", url.path)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


def _is_local(client: str, bound: object) -> bool:
    """From this machine (inside the container): loopback, or the address the server is bound to."""
    client = client.removeprefix("::ffff:")
    bound_host = str(bound[0]) if isinstance(bound, tuple) and bound else ""
    return client.startswith("127.") or client == "::1" or client == bound_host


class StatusServer:
    def __init__(self, app: OpsApp, addr: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        self.app = app
        self.httpd = Server((addr, port), _handler(app))
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
