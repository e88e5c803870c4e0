"""A burst of certificate requests: certbot runs in parallel, nginx reloads batched."""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

from sidecar.core.planner import Decision

log = logging.getLogger("sidecar")


def reload_due(since_last: float, interval: float, running: bool, queued: bool, oldest_run: float = 0.0) -> bool:
    """During a burst of certificates, whether the ones ready now go live with a reload now.

    The first one goes at once (``since_last`` is infinite), the last ones when nothing runs
    any more; in between at most every ``interval`` seconds. Once every remaining request is
    already running (none queued) and none of them has run for ``interval`` seconds yet
    (``oldest_run``), the rest of the burst is one certbot run away: wait for it instead of
    reloading twice within seconds. A slow or hung run is not waited for."""
    if not running or since_last >= 3 * interval:
        return True
    return since_last >= interval and (queued or oldest_run >= interval)


class Burst:
    """At most ``concurrency`` requests at once; ``ready`` once a finished one needs nginx to load it."""

    def __init__(self, concurrency: int, reload_interval: float) -> None:
        self.reload_interval = reload_interval
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="certbot")
        self.running: dict[str, Future[bool]] = {}
        self._started: dict[str, float] = {}
        self._last_reload = float("-inf")  # the first certificate of a burst goes live at once
        self.ready = False

    def submit(self, decision: Decision, obtain: Callable[[Decision], bool]) -> None:
        self.running[decision.site.name] = self._pool.submit(obtain, decision)
        self._started[decision.site.name] = time.monotonic()

    def collect(self, timeout: float = 0.25) -> None:
        """Wait until one run finishes (or ``timeout``); note those that succeeded."""
        wait(list(self.running.values()), timeout=timeout, return_when=FIRST_COMPLETED)
        for name in [n for n, f in self.running.items() if f.done()]:
            future = self.running.pop(name)
            self._started.pop(name, None)
            error = future.exception()
            if error is not None:
                log.error("site %s: certificate work crashed: %r", name, error)
            elif future.result():
                self.ready = True

    def reload_due(self, queued: bool) -> bool:
        now = time.monotonic()
        oldest = max((now - t for t in self._started.values()), default=0.0)
        return self.ready and reload_due(now - self._last_reload, self.reload_interval, bool(self.running),
                                         queued, oldest)

    def reloaded(self, done: bool) -> None:
        self.ready = False
        if done:
            self._last_reload = time.monotonic()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
