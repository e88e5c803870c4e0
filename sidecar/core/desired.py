"""Merge every source's sites into one desired state. Pure.

Rules, applied in a stable order so the outcome never depends on event timing:

- Sites from the sites file come first: an operator's explicit file beats labels.
- Containers follow, oldest first (then by name): the first claim on a domain wins.
- Containers of one owner (``Site.owner``: replicas of one Compose or Swarm service, or
  containers carrying the same ``acme.group`` label) that claim exactly the same domains
  with the same scheme become one site with several upstream servers (nginx balances
  across them).
- Any other claim on a domain already taken is a conflict: the claimant is left out and
  reported, naming the holder; it never joins or takes down the site that holds the domain.
- So is a site whose name (its lineage) another site already has: ``*.example.com`` is named
  ``wildcard.example.com``, which a site for that literal host name would be named too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from sidecar.core.model import DesiredState, OwnerKind, Problem, ProblemKind, Site, SourceKind


def _replica(holder: Site, site: Site) -> bool:
    """Whether ``site`` may join ``holder`` as one more upstream of the same site."""
    if (holder.source_kind, holder.domains, holder.upstream_scheme) != (
            site.source_kind, site.domains, site.upstream_scheme):
        return False
    if site.source_kind is SourceKind.CONTAINER:
        # A container without an owner is nobody's replica.
        return holder.owner is not None and holder.owner == site.owner
    return holder.owner == site.owner  # sites file entries, hand-written configs: as always


def _who(site: Site) -> str:
    """``container demo-app-b-1 (Compose service demo/app-b)``; the source alone when it says it all."""
    if site.owner is None or site.owner.kind is OwnerKind.CONTAINER:
        return site.source
    return f"{site.source} ({site.owner})"


def _conflict(site: Site, holder: Site, domain: str) -> Problem:
    """The claimant's problem: which domain, who keeps it, and what to do about it."""
    if holder.source_kind is not SourceKind.CONTAINER:
        why = f"domain {domain} belongs to {holder.source} (the sites file wins over labels); refused"
    elif holder.domains != site.domains:
        why = (f"domain {domain} is already served by {_who(holder)} with other domains "
               f"({', '.join(holder.domains)}); this site is left out until the conflict is resolved")
    elif holder.owner is not None and holder.owner == site.owner:
        why = (f"domain {domain} is served by its replica {_who(holder)} over {holder.upstream_scheme}; "
               f"this one asks for {site.upstream_scheme}; left out until they agree")
    else:
        label = next((o.group_label for o in (site.owner, holder.owner) if o is not None), "acme.group")
        why = (f"domain {domain} belongs to {_who(holder)}; refused "
               f"(set the same {label} label on both to share it)")
    return Problem(site.source, why, ProblemKind.DOMAIN_CONFLICT, holder.name)


def merge(
    file_sites: Iterable[Site],
    container_sites: Iterable[Site],
    problems: Iterable[Problem] = (),
) -> DesiredState:
    accepted: list[Site] = []
    owner: dict[str, int] = {}  # domain -> index in accepted
    found = list(problems)

    ordered = list(file_sites) + sorted(container_sites, key=lambda s: (s.created, s.source))
    names: dict[str, int] = {}  # site name -> index in accepted
    for site in ordered:
        taken = [d for d in site.domains if d in owner]
        if not taken and site.name in names:
            holder = accepted[names[site.name]]
            found.append(Problem(site.source, f"its certificate would be named {site.name}, like that of "
                                              f"{_who(holder)} ({', '.join(holder.domains)}); refused",
                                 ProblemKind.DOMAIN_CONFLICT, holder.name))
            continue
        if not taken:
            names[site.name] = len(accepted)
            for domain in site.domains:
                owner[domain] = len(accepted)
            accepted.append(site)
            continue
        holder_index = owner[taken[0]]
        holder = accepted[holder_index]
        if _replica(holder, site):
            merged = tuple(dict.fromkeys(holder.upstreams + site.upstreams))
            accepted[holder_index] = replace(
                holder, upstreams=merged, notes=holder.notes + (f"replica: {site.source}",)
            )
            continue
        found.append(_conflict(site, holder, taken[0]))
    return DesiredState(sites=tuple(accepted), problems=tuple(found))
