"""Docker Swarm services as a source (``SIDECAR_ROLE=issuer``): each running task of a service becomes
one container-like entry carrying its service's ``deploy.labels``, so labels, replicas and domain
ownership work exactly as for containers (the tasks of one service are one site's upstreams).

    GET /services (labels) + GET /tasks (node, overlay addresses) ─> ContainerInfo per running task

Nothing announces a task's address once it runs (task events do not exist), so a poller compares
a digest of services and tasks every ``SWARM_POLL_SECONDS`` and only pokes the loop when it changed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import datetime
from typing import Callable, Sequence

from sidecar.core.errors import DockerUnavailable
from sidecar.core.model import ContainerInfo, SwarmService, SwarmTask
from sidecar.sources.labels import SWARM_SERVICE

log = logging.getLogger("sidecar")


def _epoch(created: str) -> str:
    """``CreatedAt`` (RFC 3339 with nanoseconds) as the containers' sortable 12-digit seconds."""
    try:
        seconds = int(datetime.fromisoformat(created[:19] + "+00:00").timestamp())
    except ValueError:
        seconds = 0
    return f"{seconds:012d}"


def tasks_as_containers(services: Sequence[SwarmService], tasks: Sequence[SwarmTask],
                        prefix: str) -> list[ContainerInfo]:
    """One entry per running task of a service with ``<prefix>.domains`` among its labels."""
    labelled = {s.id: s for s in services if f"{prefix}.domains" in s.labels}
    out = []
    for t in sorted(tasks, key=lambda t: (t.service_id, t.slot, t.id)):
        svc = labelled.get(t.service_id)
        if svc is None or not t.running or not t.networks:
            continue
        name = f"{svc.name}.{t.slot}" if t.slot else f"{svc.name}.{t.node_id[:12]}"
        out.append(ContainerInfo(id=t.id, name=name, labels={**svc.labels, SWARM_SERVICE: svc.name},
                                 networks=dict(t.networks), created=_epoch(svc.created)))
    return out


def digest(services: Sequence[SwarmService], tasks: Sequence[SwarmTask]) -> str:
    parts = sorted(f"s {s.id} {s.name} {sorted(s.labels.items())}" for s in services)
    parts += sorted(f"t {t.id} {t.node_id} {t.running} {sorted(t.networks.items())}" for t in tasks)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class SwarmPoller:
    """Pokes the loop when services or tasks changed (read through ``read``, the Docker adapter)."""

    def __init__(self, read: Callable[[], tuple[list[SwarmService], list[SwarmTask]]], interval: float,
                 poke: Callable[[str], None]) -> None:
        self.read, self.interval, self.poke = read, interval, poke
        self.stopped = threading.Event()
        self._last = ""

    def start(self) -> None:
        threading.Thread(target=self._run, name="swarm-poller", daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                now = digest(*self.read())
            except DockerUnavailable as exc:
                log.warning("reading Swarm services failed: %s", exc)
                continue
            if now != self._last:
                if self._last:
                    self.poke("swarm services or tasks changed")
                self._last = now
