"""Other tools' settings on containers, read as labels: nginx-proxy's variables, Traefik's labels.

    containers ─> translate (traefik, nginxproxy) ─> containers with acme.* labels ─> read_containers
                                                                                        │
    ContainerView <─ explain: problems and notes name the variable or label the user wrote ─┘

A container with ``acme.domains`` is the labels' alone; otherwise Traefik labels are read first,
then nginx-proxy variables, and ``acme.*`` labels the container carries win over both. The labels'
checks, conflicts and replicas apply unchanged; what has no equivalent is one warning per container.
Container environments are not in ``GET /containers/json``: each container in scope is inspected
once (only its nginx-proxy variables are kept, by container id, until it is gone).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Mapping

from sidecar.core.errors import DockerUnavailable
from sidecar.core.model import ContainerInfo, Problem, ProblemKind
from sidecar.core.settings import Settings
from sidecar.sources import nginxproxy, traefik
from sidecar.sources.containers import ContainerView, find_nginx, in_scope, read_containers
from sidecar.sources.translation import Translation

log = logging.getLogger("sidecar")


class CompatSources:
    """Reads containers as the labels source does, with ``COMPAT_NGINX_PROXY`` / ``COMPAT_TRAEFIK``."""

    def __init__(self, settings: Settings, env_of: Callable[[str], Mapping[str, str]]) -> None:
        self.settings = settings
        self.env_of = env_of
        self._env: dict[str, dict[str, str]] = {}  # container id -> its nginx-proxy variables

    def view(self, containers: list[ContainerInfo], me: ContainerInfo | None) -> ContainerView:
        s = self.settings
        if not (s.compat_nginx_proxy or s.compat_traefik):
            return read_containers(containers, s, me)
        found = self._translations(containers, me)
        p = s.label_prefix
        translated = [dataclasses.replace(c, labels={**{f"{p}.{k}": v for k, v in t.labels.items()}, **c.labels})
                      if (t := found.get(c.id)) is not None and not t.errors else c for c in containers]
        # (a key the container also carries as a label is the label's: its problems name the label)
        by_name = {c.name: dataclasses.replace(t, origins={k: o for k, o in t.origins.items()
                                                           if f"{p}.{k}" not in c.labels})
                   for c in containers if (t := found.get(c.id)) is not None}
        return self._explain(read_containers(translated, s, me), by_name, frozenset(found))

    def _translations(self, containers: list[ContainerInfo], me: ContainerInfo | None) -> dict[str, Translation]:
        s = self.settings
        nginx_c, _ = find_nginx(containers, s, me)
        networks = list(nginx_c.networks) if nginx_c else []
        found: dict[str, Translation] = {}
        for c in containers:
            if not c.running or f"{s.label_prefix}.domains" in c.labels or s.managed_label in c.labels \
                    or (nginx_c is not None and c.id == nginx_c.id) or not in_scope(c, s, me, networks):
                continue
            t = traefik.translate(c) if s.compat_traefik else None
            if t is None and s.compat_nginx_proxy:
                t = nginxproxy.translate(c, self._environment(c.id), s.acme_email)
            if t is not None:
                found[c.id] = t
        listed = {c.id for c in containers}
        self._env = {cid: env for cid, env in self._env.items() if cid in listed}
        return found

    def _environment(self, container_id: str) -> dict[str, str]:
        if container_id not in self._env:
            try:
                env = self.env_of(container_id)
            except DockerUnavailable as exc:  # (gone since the listing: the next pass will not see it)
                log.debug("container %s: environment not read: %s", container_id[:12], exc)
                return {}
            self._env[container_id] = {k: v for k, v in env.items() if k in nginxproxy.ENV_KEYS}
        return self._env[container_id]

    def _explain(self, view: ContainerView, found: Mapping[str, Translation], ids: frozenset[str]) -> ContainerView:
        """Problems and site notes name what the user wrote (``env VIRTUAL_HOST``), not ``label acme.domains``;
        the untranslated parts are one warning per container; vhost.d files are included."""
        p = self.settings.label_prefix

        def named(name: str, text: str) -> str:
            t = found.get(name)
            for key, origin in (t.origins.items() if t else ()):
                text = text.replace(f"label {p}.{key}", origin)
            return text

        problems = [dataclasses.replace(x, source=named(x.source.split(" ")[1], x.source))
                    if x.source.startswith("container ") and " label " in x.source else x for x in view.problems]
        for name, each in found.items():
            problems += each.errors
            if each.untranslated and not each.errors:
                problems.append(Problem(f"container {name}", f"{each.source} not translated: "
                                        + "; ".join(each.untranslated), ProblemKind.WARNING))
        files = self._vhost_files()
        sites = []
        for site in view.sites:
            name = site.source.removeprefix("container ")
            t = found.get(name)
            if t is not None and site.source.startswith("container "):
                site = dataclasses.replace(
                    site, notes=(*(named(name, n) for n in site.notes), f"from {t.source}"),
                    options=dataclasses.replace(site.options, origins=tuple(
                        (k, named(name, o)) for k, o in site.options.origins)))
                if t.source == nginxproxy.SOURCE and files is not None:
                    includes, location = nginxproxy.vhost_includes(site.domains, str(self.settings.vhost_dir), files)
                    site = dataclasses.replace(site, includes=includes, location_includes=location)
            sites.append(site)
        return dataclasses.replace(view, sites=tuple(sites), problems=tuple(problems),
                                   relevant_ids=view.relevant_ids | ids)

    def _vhost_files(self) -> frozenset[str] | None:
        directory = self.settings.vhost_dir
        if not self.settings.compat_nginx_proxy or directory is None:
            return None
        try:
            return frozenset(e for e in os.listdir(directory) if (directory / e).is_file())
        except OSError:
            return frozenset()
