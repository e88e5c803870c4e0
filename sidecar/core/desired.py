"""Merge every source's sites into one desired state. Pure.

Rules, applied in a stable order so the outcome never depends on event timing:

- Sites from the sites file come first: an operator's explicit file beats labels.
- Containers follow, oldest first (then by name): the first claim on a domain wins.
- Containers that claim exactly the same domains with the same scheme are replicas:
  they become one site with several upstream servers (nginx balances across them).
- A site that claims a domain already taken is left out and reported; it does not
  take down the site that holds the domain.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from sidecar.core.model import DesiredState, Problem, Site


def merge(
    file_sites: Iterable[Site],
    container_sites: Iterable[Site],
    problems: Iterable[Problem] = (),
) -> DesiredState:
    accepted: list[Site] = []
    owner: dict[str, int] = {}  # domain -> index in accepted
    found = list(problems)

    ordered = list(file_sites) + sorted(container_sites, key=lambda s: (s.created, s.source))
    for site in ordered:
        taken = [d for d in site.domains if d in owner]
        if not taken:
            for domain in site.domains:
                owner[domain] = len(accepted)
            accepted.append(site)
            continue
        holder_index = owner[taken[0]]
        holder = accepted[holder_index]
        if (
            holder.source_kind == site.source_kind
            and holder.domains == site.domains
            and holder.upstream_scheme == site.upstream_scheme
        ):
            merged = tuple(dict.fromkeys(holder.upstreams + site.upstreams))
            accepted[holder_index] = replace(
                holder, upstreams=merged, notes=holder.notes + (f"replica: {site.source}",)
            )
            continue
        found.append(
            Problem(
                site.source,
                f"domain {taken[0]} is already served by {holder.source}; this site is left out "
                "until the conflict is resolved",
            )
        )
    return DesiredState(sites=tuple(accepted), problems=tuple(found))
