"""Consumer hooks: after a certificate changed, tell the containers that use it (``acme.consumer``).

    pass start:  seen(consumers, lineages)      a container seen for the first time has what is on disk
    pass end:    deliver(consumers, lineages)   each container whose certificate changed since is told,
                                                in a worker thread of its own: restart, a signal, or an
                                                exec'd command through the Docker API
    result:      consumer_signalled / consumer_failed events (metrics, alerts, /events, the log);
                 a failure is retried on BACKOFF_SCHEDULE and never holds up nginx or other sites

What each container has is kept in ``STATE_DIR/consumers.json``, so a restart of the sidecar tells
nobody twice, and a renewal that happened while a hook failed is still delivered.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Protocol

from sidecar.adapters.docker_api import ExecResult
from sidecar.core import consumers
from sidecar.core.consumers import Consumer, Delivery
from sidecar.core.errors import DockerUnavailable
from sidecar.core.events import Kind
from sidecar.core.model import Certificate
from sidecar.core.settings import Settings
from sidecar.engine.reporter import Reporter
from sidecar.state import files

log = logging.getLogger("sidecar")

HOOKS_FILE = "consumers.json"
EXEC_TIMEOUT = 60.0   # seconds an exec'd hook command may take
RESTART_TIMEOUT = 10  # seconds a restarted consumer gets to stop before it is killed


class ConsumerDocker(Protocol):
    """The Docker adapter's surface the hooks use."""

    def restart(self, container_id: str, timeout: int = ...) -> None: ...

    def kill(self, container_id: str, signal: str) -> None: ...

    def exec(self, container_id: str, cmd: list[str], *, environment: Mapping[str, str] | None = ...,
             timeout: float | None = ...) -> ExecResult: ...


class HookFailed(Exception):
    """The container was reached but the hook did not work (an exec'd command failed)."""


class Hooks:
    def __init__(self, settings: Settings, docker: ConsumerDocker, reporter: Reporter,
                 poke: Callable[[str], None] = lambda reason: None,
                 submit: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.settings = settings
        self.poke = poke  # wakes the loop when a failed hook is due again
        self.docker = docker
        self.reporter = reporter
        self.path = settings.state_dir / HOOKS_FILE
        self.records: dict[str, Delivery] = self._load()
        self._saved = dict(self.records)
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # containers a hook is running for
        self._pool: ThreadPoolExecutor | None = None
        self._timers: dict[str, threading.Timer] = {}
        # how a hook is run; by default in one worker thread (tests pass ``lambda f: f()``)
        self._submit = submit or self._in_worker

    # -- from the loop ----------------------------------------------------------------
    def seen(self, wanted: tuple[Consumer, ...], lineages: Mapping[str, Certificate]) -> None:
        """At the start of a pass: note new consumer containers (with what is on disk now); forget gone ones."""
        serials = {name: cert.serial for name, cert in lineages.items()}
        with self._lock:
            self.records = consumers.seen(self.records, wanted, serials)
        self._save()

    def deliver(self, wanted: tuple[Consumer, ...], lineages: Mapping[str, Certificate]) -> None:
        """At the end of a pass: start a hook for every consumer whose certificate changed."""
        serials = {name: cert.serial for name, cert in lineages.items()}
        with self._lock:
            todo = [(c, s) for c, s in consumers.due(self.records, wanted, serials, self.reporter.clock())
                    if c.container_id not in self._busy]
            self._busy.update(c.container_id for c, _ in todo)
        for consumer, serial in todo:
            self._submit(functools.partial(self._tell, consumer, serial))

    def close(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one hook ---------------------------------------------------------------------
    def _in_worker(self, job: Callable[[], None]) -> object:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-hook")
        return self._pool.submit(job)

    def _tell(self, c: Consumer, serial: int) -> None:
        try:
            error = ""
            try:
                self._run(c)
            except (DockerUnavailable, HookFailed) as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a hook's failure is recorded and retried, never a crash
                error = f"internal error: {type(exc).__name__}: {exc}"
            now = self.reporter.clock()
            with self._lock:
                record = self.records.get(c.container_id) or Delivery(c.cert_name, None)
                record = consumers.delivered(record, serial) if not error else consumers.failed(
                    record, error, now, self.settings.backoff)
                if c.container_id in self.records:  # (gone meanwhile: nothing to keep)
                    self.records[c.container_id] = record
            self._save()
            if not error:
                log.info("site %s: container %s told of its new certificate (%s)", c.cert_name, c.container, c.signal)
                self.reporter.emit(Kind.CONSUMER_SIGNALLED, c.cert_name, f"container {c.container}: {c.signal}",
                                   container=c.container, signal=str(c.signal), serial=f"{serial:x}")
            else:
                log.error("site %s: telling container %s of its new certificate (%s) failed: %s; next attempt %s UTC",
                          c.cert_name, c.container, c.signal, error, f"{record.retry_at:%Y-%m-%d %H:%M:%S}")
                self.reporter.emit(Kind.CONSUMER_FAILED, c.cert_name, f"container {c.container}: {error}",
                                   container=c.container, signal=str(c.signal), error=error,
                                   failures=record.failures, next_attempt=record.retry_at)
                self._retry_at(c, (record.retry_at - now).total_seconds() if record.retry_at else 60.0)
        finally:
            with self._lock:
                self._busy.discard(c.container_id)

    def _retry_at(self, c: Consumer, seconds: float) -> None:
        """Wake the loop when the failed hook is due again (no other trigger may come by then)."""
        timer = threading.Timer(max(seconds, 0.0) + 0.05, self.poke, args=(f"consumer hook retry: {c.container}",))
        timer.daemon = True
        old = self._timers.pop(c.container_id, None)
        if old is not None:
            old.cancel()
        self._timers[c.container_id] = timer
        timer.start()

    def _run(self, c: Consumer) -> None:
        how = c.signal
        if how.how == "restart":
            self.docker.restart(c.container_id, RESTART_TIMEOUT)
        elif how.how == "signal":
            self.docker.kill(c.container_id, how.name)
        elif how.how == "exec":
            result = self.docker.exec(c.container_id, list(how.command), timeout=EXEC_TIMEOUT)
            if result.exit_code != 0:
                last = next((ln.strip() for ln in reversed(result.output.splitlines()) if ln.strip()), "no output")
                raise HookFailed(f"{how} exited {result.exit_code}: {last[:300]}")

    # -- the state file ---------------------------------------------------------------
    def _load(self) -> dict[str, Delivery]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot read it (%s); consumers seen from now on are told of the next change", self.path,
                        exc)
            return {}
        found = {str(k): r for k, v in (data.get("containers") or {}).items()
                 if (r := Delivery.from_json(v)) is not None} if isinstance(data, dict) else {}
        return found

    def _save(self) -> None:
        with self._lock:
            if self.records == self._saved:
                return
            records = dict(self.records)
            doc = {"version": 1, "containers": {k: r.to_json() for k, r in sorted(records.items())}}
            try:
                files.atomic_write(self.path, json.dumps(doc, indent=1) + "\n")
                self._saved = records
            except OSError as exc:
                log.warning("cannot write %s: %s", self.path, exc)
