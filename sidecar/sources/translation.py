"""What another tool's settings on one container amount to, in this sidecar's labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.core.model import Problem


@dataclass(frozen=True)
class Translation:
    source: str  # "nginx-proxy variables", "Traefik labels"
    # label keys without the prefix (domains, port, ...) -> value; and where each came from,
    # e.g. "env VIRTUAL_HOST", so a bad value is reported under the name the user wrote
    labels: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    # what leaves the container out (its labels are not read then)
    errors: tuple[Problem, ...] = ()
    # what has no equivalent here, each with why: named in one warning, never dropped silently
    untranslated: tuple[str, ...] = ()
