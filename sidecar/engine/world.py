"""One read of the world: every source as a whole, frozen into a ``Snapshot``.

    containers (labels)  ─┐
    sites file           ─┼─> desired.merge ─> consumers.attach ─> Snapshot(desired, nginx, lineages, ...)
    hand-written confs   ─┘                    (acme.consumer)
    lineages on disk     ─────────────────────────────────────────┘

A new source (another orchestrator's services, say) is one more module in ``sources/``
returning sites and problems, and one more line in :meth:`World.read`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Mapping

from sidecar.adapters.docker_api import Docker
from sidecar.core import desired
from sidecar.core.consumers import Consumer
from sidecar.core.model import Certificate, ContainerInfo, DesiredState, Problem
from sidecar.core.settings import Settings
from sidecar.sources import consumers, swarm
from sidecar.sources.compat import CompatSources
from sidecar.sources.confs import read_confs
from sidecar.sources.containers import defaults_of
from sidecar.sources.sitesfile import SitesFileSource
from sidecar.state.lineages import LineageStore

log = logging.getLogger("sidecar")


@dataclass(frozen=True)
class Snapshot:
    desired: DesiredState
    nginx: ContainerInfo | None
    lineages: Mapping[str, Certificate]
    cert_problems: tuple[Problem, ...] = ()
    # nginx's address on a network the sidecar shares with it (pre-flight and TLS checks)
    nginx_addr: tuple[str, int] | None = None
    # ports where a hand-written server is the default_server; files the hand-written config reads
    user_defaults: frozenset[int] = frozenset()
    user_conf_files: tuple[str, ...] = ()
    # containers using a certificate themselves (label acme.consumer), told when it changes
    consumers: tuple[Consumer, ...] = ()

    def with_lineages(self, store: LineageStore) -> "Snapshot":
        """The same snapshot with the lineages as they are on disk now (after certbot runs)."""
        lineages, problems = store.for_sites(self.desired.sites)
        return dataclasses.replace(self, lineages=lineages, cert_problems=tuple(problems))


class World:
    """Reads the sources; remembers only what makes the next read cheaper or quieter."""

    def __init__(self, settings: Settings, docker: Docker, lineages: LineageStore,
                 me: ContainerInfo | None = None) -> None:
        self.settings = settings
        self.docker = docker
        self.lineages = lineages
        self.me = me
        self.sites_file = SitesFileSource(settings.sites_file, settings.state_dir, defaults_of(settings))
        self.compat = CompatSources(settings, lambda cid: docker.container_env(cid))  # nginx-proxy, Traefik
        self.relevant_ids: frozenset[str] = frozenset()  # read by the Docker event filter
        self._nginx_warning = ""
        self.took: dict[str, float] = {}  # seconds per part of the last read (logged at debug by a first pass)

    def read(self) -> Snapshot:
        lap = time.monotonic()

        def took(part: str) -> None:
            nonlocal lap
            now = time.monotonic()
            self.took[part], lap = now - lap, now

        listed = self.docker.list_containers()
        if self.settings.role == "issuer":  # Swarm services' tasks, read like containers
            listed += swarm.tasks_as_containers(self.docker.swarm_services(), self.docker.swarm_tasks(),
                                                self.settings.label_prefix)
        view = self.compat.view(listed, self.me)
        wanted = consumers.read_consumers(listed, self.settings, self.me, view.nginx)
        self.relevant_ids = view.relevant_ids | wanted.ids
        if view.nginx_warning and view.nginx_warning != self._nginx_warning:
            log.warning("%s", view.nginx_warning)
        self._nginx_warning = view.nginx_warning
        took("containers")
        self.lineages.parse_ahead()  # (many new certificates: parsed by a helper process meanwhile)
        took("certificates ahead")
        file_sites, file_problems = self.sites_file.read()
        took("sites file")
        lineages, cert_problems = self.lineages.read()
        took("certificates")
        confs = read_confs(self.settings, lineages)
        took("hand-written configs")
        state = desired.merge([*confs.sites, *file_sites], list(view.sites),
                              [*view.problems, *confs.problems, *file_problems])
        state, consumed = consumers.attach(state, wanted, self.settings.label_prefix)
        lineages, cert_problems = self.lineages.for_sites(state.sites)  # (with certificates adopted for them)
        took("merge")
        return Snapshot(state, view.nginx, lineages, tuple(cert_problems), self._address(view.nginx),
                        confs.user_defaults, confs.files, consumed)

    def _address(self, nginx_c: ContainerInfo | None) -> tuple[str, int] | None:
        if nginx_c is None or self.me is None:
            return None
        me = self.docker.find_container(self.me.id) or self.me
        for net in sorted(set(me.networks) & set(nginx_c.networks)):
            if nginx_c.networks.get(net):
                return nginx_c.networks[net], 80
        return None
