"""What wakes the loop: Docker events, file changes, timers, the operator.

Triggers carry no change: they only poke the loop, which then reads every source
again as a whole. A burst of pokes is coalesced (debounced) into one pass; the
debounce has an upper bound, so a steady trickle of events cannot postpone every pass.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_exponential
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from sidecar.core import nginxconf
from sidecar.core.errors import DockerUnavailable
from sidecar.core.settings import Settings
from sidecar.sources.labels import COMPOSE_PROJECT

log = logging.getLogger("sidecar")

MAX_SLEEP = timedelta(minutes=5)  # a pass at least this often, whatever happens
MAX_DEBOUNCE = 2.0  # seconds: a pass starts at the latest this long after the first poke
INTERESTING = {"start", "die", "stop", "destroy", "rename", "update", "pause", "unpause", "connect", "disconnect"}
_CHANGES = ("created", "modified", "moved", "deleted", "closed")  # not our own reads ("opened", ...)


class Triggers:
    """The loop's doorbell: ``poke`` from any thread, ``wait`` in the loop."""

    def __init__(self, debounce: float, clock: Callable[[], datetime]) -> None:
        self.debounce = debounce
        self.clock = clock
        self._wake = threading.Event()
        self.stopped = threading.Event()
        self._reasons: list[str] = []
        self._partial = 0  # pokes since the last take() that more may follow (see poke)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def poke(self, reason: str, complete: bool = False) -> None:
        """``complete``: the change is whole already (a file renamed into place, or closed after
        writing), so no more of it is coming: it needs no debounce."""
        with self._lock:
            self._reasons.append(reason)
            self._partial += 0 if complete else 1
        self._wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()
        if self._timer is not None:
            self._timer.cancel()

    @property
    def pending(self) -> bool:
        """A poke arrived since the last ``wait`` or ``take``."""
        return self._wake.is_set()

    def take(self) -> list[str]:
        """The reasons so far, clearing them (the loop reacts to them now)."""
        self._wake.clear()
        with self._lock:
            reasons, self._reasons, self._partial = self._reasons, [], 0
        return reasons

    def _settled(self) -> bool:
        with self._lock:
            return bool(self._reasons) and not self._partial

    def wait(self) -> list[str] | None:
        """Block until poked, let a burst settle, then return why (None once stopped)."""
        self._wake.wait()
        started = time.monotonic()
        while not self.stopped.is_set() and not self._settled():
            self._wake.clear()
            if not self._wake.wait(self.debounce) or time.monotonic() - started >= MAX_DEBOUNCE:
                break
        if self.stopped.is_set():
            return None
        return self.take() or ["timer"]

    def arm_timer(self, next_due: datetime | None) -> None:
        """Poke at ``next_due`` (at the latest after ``MAX_SLEEP``)."""
        now = self.clock()
        due = min(next_due, now + MAX_SLEEP) if next_due else now + MAX_SLEEP
        timer = threading.Timer(max((due - now).total_seconds(), 1.0), self.poke, args=("timer",))
        timer.daemon = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = timer
        timer.start()


def relevant_event(event: dict[str, Any], settings: Settings, relevant_ids: frozenset[str],
                   project: str | None = None) -> bool:
    """Only events that can change the desired state wake the loop (a busy engine is full of others).
    ``project``: the sidecar's Compose project, with ``SITES_SCOPE=project`` (other projects' labelled
    containers do not concern it: at ten thousand sites each pass they would wake costs seconds)."""
    s = settings
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    action = str(event.get("Action") or event.get("status") or "").split(":")[0]
    if action not in INTERESTING or s.managed_label in attributes:
        return False  # (the latter: our own certbot containers coming and going)
    if event.get("Type") == "network":
        return str(attributes.get("container", "")) in relevant_ids
    actor = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
    if s.sites_scope == "project" and project and attributes.get(COMPOSE_PROJECT) != project \
            and actor not in relevant_ids \
            and (s.nginx_container is None or attributes.get("name") != s.nginx_container):
        return False
    if f"{s.label_prefix}.domains" in attributes or f"{s.label_prefix}.consumer" in attributes \
            or (s.nginx_label in attributes and s.nginx_container is None):
        return True  # (with NGINX_CONTAINER set, other stacks' nginx containers do not concern it)
    if s.compat_traefik and any(str(k).startswith("traefik.") for k in attributes):
        return True
    if s.compat_nginx_proxy and action == "start":
        return True  # (nginx-proxy's variables are not in the event: a started container is read once)
    return actor in relevant_ids or (s.nginx_container is not None and attributes.get("name") == s.nginx_container)


class DockerEventWatcher:
    """Follows the Docker event stream in a thread and pokes the loop on relevant events.

    It never gives up: a lost stream is reconnected with back-off, and so is one that failed
    in an unexpected way. ``problem`` says why it is not following right now ("" while it is):
    the health check shows it, since only the timer picks up changes meanwhile.
    """

    def __init__(self, events: Callable[[], Iterator[dict[str, Any]]], settings: Settings, triggers: Triggers,
                 relevant_ids: Callable[[], frozenset[str]], max_wait: float = 30.0,
                 project: Callable[[], str | None] = lambda: None) -> None:
        self.events = events
        self.project = project
        self.settings = settings
        self.triggers = triggers
        self.relevant_ids = relevant_ids
        self.max_wait = max_wait
        self.problem = ""

    def start(self) -> None:
        threading.Thread(target=self.run, name="docker-events", daemon=True).start()

    def _follow(self) -> None:
        stream = self.events()
        self.problem = ""
        self.triggers.poke("event stream (re)connected")
        for event in stream:
            if self.triggers.stopped.is_set():
                return
            if relevant_event(event, self.settings, self.relevant_ids(), self.project()):
                action = str(event.get("Action") or event.get("status") or "").split(":")[0]
                self.triggers.poke(f"docker {event.get('Type')} {action}")
        if not self.triggers.stopped.is_set():
            raise DockerUnavailable("event stream ended")

    def _lost(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DockerUnavailable):
            self.problem = f"Docker event stream lost ({exc}); reconnecting"
            log.warning("%s", self.problem)
        else:
            self.problem = f"Docker event watcher failed ({type(exc).__name__}: {exc}); restarting it"
            log.error("%s", self.problem, exc_info=exc)
        self.triggers.poke("event watcher lost")  # a pass, so health and status say it now

    def run(self) -> None:
        Retrying(
            wait=wait_exponential(multiplier=1, min=1, max=self.max_wait),
            retry=retry_if_exception(lambda _: not self.triggers.stopped.is_set()),
            stop=stop_never,
            before_sleep=self._lost,
            reraise=True,
        )(self._follow)


class _Handler(FileSystemEventHandler):
    def __init__(self, wanted: Callable[[str], bool], reason: str, poke: Callable[[str, bool], None],
                 skip_dir_modified: bool = False) -> None:
        self.wanted, self.reason, self.poke, self.skip_dir_modified = wanted, reason, poke, skip_dir_modified

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        if self.skip_dir_modified and event.is_directory and event.event_type == "modified":
            return  # a directory on every write in it, ours too: the files' own events say what changed
        dest = str(getattr(event, "dest_path", "") or "")
        src_wanted, dest_wanted = self.wanted(str(event.src_path)), bool(dest) and self.wanted(dest)
        if src_wanted or dest_wanted:
            # Whole: renamed into place, or closed by its writer. Not so: written in place, or
            # renamed away (an editor's backup: the new file may follow within milliseconds).
            self.poke(self.reason, (event.event_type == "moved" and dest_wanted)
                      or (event.event_type == "closed" and src_wanted))


def watch_files(settings: Settings, poke: Callable[[str, bool], None]) -> list[BaseObserver]:
    """Watch the sites file (through its directory: editors replace files by rename) and the
    hand-written nginx files; the sidecar's own writes do not count."""
    observers = []
    path = settings.sites_file
    if path is not None:
        if path.parent.is_dir():
            observers.append(_observe(path.parent, _Handler(lambda p: p == str(path), "sites file changed", poke),
                                      recursive=False))
        else:
            log.error("SITES_FILE=%s: directory %s does not exist; the sites file is not watched", path, path.parent)
    if settings.conf_dir.is_dir():
        observers.append(_observe(settings.conf_dir, _Handler(nginxconf.relevant_change, "nginx config changed", poke,
                                                              skip_dir_modified=True), recursive=True))
    # nginx-proxy's vhost.d files come and go; certificates adopted from another tool may be replaced by it
    for directory, why in ((settings.vhost_dir if settings.compat_nginx_proxy else None, "vhost.d changed"),
                           (settings.adopt_certs_dir, "adopted certificates changed")):
        if directory is not None and directory.is_dir():
            observers.append(_observe(directory, _Handler(lambda _: True, why, poke, skip_dir_modified=True),
                                      recursive=True))
    return observers


def _observe(directory: Path, handler: FileSystemEventHandler, recursive: bool) -> BaseObserver:
    observer = Observer()
    observer.schedule(handler, str(directory), recursive=recursive)
    observer.daemon = True
    observer.start()
    return observer
