"""Containers as a source: which one is nginx, which may declare sites, and their label sites."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.core import options
from sidecar.core.model import ContainerInfo, Problem, Site
from sidecar.core.settings import Settings
from sidecar.sources import labels
from sidecar.sources.labels import COMPOSE_PROJECT


def defaults_of(settings: Settings) -> options.Defaults:
    """The environment's defaults that a site's options are checked against (both sources use them)."""
    return options.Defaults(settings.challenge, settings.dns_provider)


def find_nginx(containers: list[ContainerInfo], settings: Settings,
               me: ContainerInfo | None) -> tuple[ContainerInfo | None, str]:
    """The nginx to manage, and a warning about the choice ("" if none).

    By name (``NGINX_CONTAINER``), else the one labelled ``<prefix>.nginx=true``. With several
    labelled containers on the engine (several stacks), the one in the sidecar's own Compose
    project wins, then one sharing a network with it; another stack's nginx never does (while
    ours is re-created, we wait for it).
    """
    s = settings
    if s.nginx_container:
        want = s.nginx_container
        return next((c for c in containers if c.name == want or c.id.startswith(want)), None), ""
    marked = [c for c in containers if c.labels.get(s.nginx_label, "").lower() in ("true", "1", "yes")]
    warning = ""
    if marked and me is not None:
        project = me.labels.get(COMPOSE_PROJECT)
        same_project = [c for c in marked if project and c.labels.get(COMPOSE_PROJECT) == project]
        same_network = [c for c in marked if set(c.networks) & set(me.networks)]
        ours = same_project or same_network
        if not ours and len(marked) == 1 and not (project and marked[0].labels.get(COMPOSE_PROJECT)):
            ours = marked  # a lone nginx, and one of the two outside Compose: take it
        if not ours:
            warning = (f"ignoring {', '.join(c.name for c in marked)} (labelled {s.nginx_label}=true but neither "
                       "in this Compose project nor on a network shared with the sidecar)")
        marked = ours
    if len(marked) > 1:
        warning = (f"several containers carry {s.nginx_label}=true ({', '.join(c.name for c in marked)}); "
                   f"using {marked[0].name} (set NGINX_CONTAINER to choose)")
    return (marked[0] if marked else None), warning


def in_scope(c: ContainerInfo, settings: Settings, me: ContainerInfo | None, nginx_networks: list[str]) -> bool:
    """SITES_SCOPE: which containers may declare sites (all, this Compose project, nginx's networks)."""
    scope = settings.sites_scope
    if scope == "project":
        project = me.labels.get(COMPOSE_PROJECT) if me else None
        return bool(project) and c.labels.get(COMPOSE_PROJECT) == project
    if scope == "network":
        return bool(set(c.networks) & set(nginx_networks))
    return True


@dataclass(frozen=True)
class ContainerView:
    """What the containers say in one read."""

    nginx: ContainerInfo | None
    nginx_warning: str
    sites: tuple[Site, ...]
    problems: tuple[Problem, ...]
    # containers whose events can change the desired state (labelled ones, nginx)
    relevant_ids: frozenset[str]


def read_containers(containers: list[ContainerInfo], settings: Settings, me: ContainerInfo | None) -> ContainerView:
    nginx_c, warning = find_nginx(containers, settings, me)
    domains_label = f"{settings.label_prefix}.domains"
    relevant = frozenset(c.id for c in containers
                         if domains_label in c.labels or (nginx_c is not None and c.id == nginx_c.id))
    nginx_networks = list(nginx_c.networks) if nginx_c else []
    sites, problems = labels.sites_from_containers(
        [c for c in containers
         if (nginx_c is None or c.id != nginx_c.id) and in_scope(c, settings, me, nginx_networks)],
        settings.label_prefix, nginx_networks, defaults_of(settings),
    )
    return ContainerView(nginx_c, warning, tuple(sites), tuple(problems), relevant)
