"""Consumer containers as a source: ``acme.consumer`` labels -> consumers, and the sites their
certificates need (see ``core.consumers``). Pure: works on ``ContainerInfo`` snapshots only.

==========================  ==================================================================
``acme.consumer``           host names, as ``acme.domains``; the first names the certificate
``acme.consumer.signal``    ``restart`` (default), ``SIGHUP`` (any signal name), ``exec:<command>``, ``none``
==========================  ==================================================================

A consumer whose names are exactly a served site's (same first name) shares that site's
certificate; one whose names are nobody's gets a site of its own without a vhost; one whose
names overlap another site's differently is a problem naming both, and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from sidecar.core.consumers import Consumer, parse_signal
from sidecar.core.domains import DomainError, parse_domain_list
from sidecar.core.model import ContainerInfo, DesiredState, Problem, Site, SourceKind
from sidecar.core.settings import Settings
from sidecar.sources.containers import in_scope
from sidecar.sources.labels import label_source

SIGNAL_KEY = "signal"


@dataclass(frozen=True)
class ConsumerView:
    """What the consumer labels say in one read."""

    consumers: tuple[Consumer, ...]
    sites: tuple[Site, ...]         # one per consumer, SourceKind.CONSUMER (``attach`` keeps those needed)
    problems: tuple[Problem, ...]
    ids: frozenset[str]             # containers whose events can change what is wanted


def consumer_from_container(container: ContainerInfo, prefix: str) -> tuple[Consumer, Site] | Problem | None:
    """The container's consumer and the site its certificate needs, a Problem, or None if it is none."""
    key = f"{prefix}.consumer"
    extra = sorted(k for k in container.labels if k.startswith(key + "."))
    if key not in container.labels:
        return Problem(label_source(container, extra[0]), f"needs {key}=<names> as well") if extra else None
    unknown = [k for k in extra if k != f"{key}.{SIGNAL_KEY}"]
    if unknown:
        return Problem(label_source(container, unknown[0]), f"unknown label (known: {key}, {key}.{SIGNAL_KEY})")
    try:
        domains = parse_domain_list(container.labels[key])
    except DomainError as exc:
        return Problem(label_source(container, key), str(exc))
    try:
        signal = parse_signal(container.labels.get(f"{key}.{SIGNAL_KEY}", "restart"))
    except ValueError as exc:
        return Problem(label_source(container, f"{key}.{SIGNAL_KEY}"), str(exc))
    site = Site(domains=domains, upstreams=(), source=f"consumer container {container.name}",
                source_kind=SourceKind.CONSUMER, created=container.created,
                notes=(f"certificate only (no vhost) for container {container.name}",))
    return Consumer(container.id, container.name, domains, site.name, signal), site


def read_consumers(containers: Iterable[ContainerInfo], settings: Settings, me: ContainerInfo | None,
                   nginx: ContainerInfo | None) -> ConsumerView:
    """Every consumer in scope (``SITES_SCOPE``), oldest first. Containers that are not running
    count too: a service that cannot start without its certificate gets it."""
    nginx_networks = list(nginx.networks) if nginx else []
    consumers, sites, problems, ids = [], [], [], set()
    for c in sorted(containers, key=lambda c: (c.created, c.name)):
        if (nginx is not None and c.id == nginx.id) or not in_scope(c, settings, me, nginx_networks):
            continue
        found = consumer_from_container(c, settings.label_prefix)
        if found is None:
            continue
        ids.add(c.id)
        if isinstance(found, Problem):
            problems.append(found)
        else:
            consumers.append(found[0])
            sites.append(found[1])
    return ConsumerView(tuple(consumers), tuple(sites), tuple(problems), frozenset(ids))


def attach(state: DesiredState, view: ConsumerView, prefix: str) -> tuple[DesiredState, tuple[Consumer, ...]]:
    """The desired state with the consumers' sites merged in (after every other source: a vhost
    never yields to a consumer), and the consumers that got their certificate's site."""
    sites, problems = list(state.sites), [*state.problems, *view.problems]
    holder_of = {d: i for i, s in enumerate(sites) for d in s.domains}
    accepted = []
    for consumer, own in zip(view.consumers, view.sites):
        taken = [d for d in consumer.domains if d in holder_of]
        if not taken:
            holder_of.update((d, len(sites)) for d in consumer.domains)
            sites.append(own)
            accepted.append(consumer)
            continue
        i = holder_of[taken[0]]
        holder = sites[i]
        if set(holder.domains) == set(consumer.domains) and holder.name == consumer.cert_name:
            if holder.source_kind is SourceKind.CONSUMER:  # (a vhost's rendered file stays as it is)
                sites[i] = replace(holder, notes=holder.notes + own.notes)
            accepted.append(consumer)
            continue
        problems.append(Problem(
            _source_of(consumer, prefix),
            f"domain {taken[0]} is in site {holder.name} ({', '.join(holder.domains)}) from {holder.source}; "
            f"to use its certificate name exactly its names, {holder.name} first; left out"))
    return DesiredState(tuple(sites), tuple(problems)), tuple(accepted)


def _source_of(consumer: Consumer, prefix: str) -> str:
    return f"container {consumer.container} label {prefix}.consumer"
