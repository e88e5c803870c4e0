"""Strict validation of domain names before they go anywhere near nginx or certbot."""

from __future__ import annotations

import ipaddress
import re

import idna

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_NAMES_PER_CERT = 100  # the CA's limit on identifiers per order


class DomainError(ValueError):
    """The value is not an acceptable host name; the message says why."""


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def looks_numeric(host: str) -> bool:
    """Whether ``host`` may be an IP address (digits and dots, or a colon): only then is it worth
    asking ``ipaddress``, which is slow to say no (ten thousand names at every start)."""
    return ":" in host or host.replace(".", "").isdigit()


def as_ip_address(text: str) -> str | None:
    """``text`` as an IP address in its normal form, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def wildcard_error(name: str) -> str:
    """Why a wildcard name is refused for a site validated over HTTP-01 (one line)."""
    return f"wildcard {name!r} cannot be validated over HTTP-01"


def normalize_domain(raw: str, wildcard: bool = False) -> str:
    """Return ``raw`` as a lower-case ASCII (punycode) host name, or raise DomainError.

    Accepts internationalised names (IDNA 2008 with UTS 46 mapping) and one
    trailing dot. Rejects wildcards (HTTP-01 cannot validate them) unless ``wildcard``:
    then ``*.`` followed by a valid name of at least two labels is accepted (DNS-01 can
    validate it; the caller checks the site's challenge). Always rejects IP addresses,
    single-label names, numeric top-level labels and anything over 253 octets.
    """
    if not isinstance(raw, str):
        raise DomainError("not a string")
    name = raw.strip()
    if not name:
        raise DomainError("empty domain name")
    if len(name) > 1000:
        raise DomainError("domain name too long")
    if name.endswith("."):
        name = name[:-1]
    if "*" in name:
        rest = name[2:] if name.startswith("*.") else ""
        if not wildcard:
            raise DomainError(wildcard_error(name))
        if "*" in rest or not rest:
            raise DomainError(f"{name!r}: a wildcard is '*.' followed by a name, like *.example.com")
        try:
            return "*." + normalize_domain(rest)
        except DomainError as exc:
            raise DomainError(f"{name!r}: {exc}") from None
    if looks_numeric(name) and as_ip_address(name.strip("[]")) is not None:
        raise DomainError(f"{name!r} is an IP address, not a domain name")
    if not name.isascii() or "xn--" in name.lower():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise DomainError(f"{raw.strip()!r} is not a valid internationalised name ({exc})") from None
    name = name.lower()
    if len(name) > 253:
        raise DomainError(f"{name[:40]}... is longer than 253 characters")
    labels = name.split(".")
    if len(labels) < 2:
        raise DomainError(f"{name!r} needs at least two labels (like example.com)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise DomainError(f"{name!r}: label {label[:63]!r} is not a valid host name label")
    if labels[-1].isdigit():
        raise DomainError(f"{name!r}: the top-level label cannot be numeric")
    return name


def parse_domain_list(raw: str, wildcard: bool = False) -> tuple[str, ...]:
    """Split a comma- or space-separated list, normalise each name, drop duplicates (order kept)."""
    if len(raw) > 20_000:
        raise DomainError("domain list too long")
    parts = [p for p in re.split(r"[,\s]+", raw) if p]
    return normalize_domains(parts, wildcard)


def normalize_domains(parts: list[str] | tuple[str, ...], wildcard: bool = False) -> tuple[str, ...]:
    if not parts:
        raise DomainError("no domain names given")
    seen: dict[str, None] = {}
    for part in parts:
        seen.setdefault(normalize_domain(part, wildcard), None)
    if len(seen) > MAX_NAMES_PER_CERT:
        raise DomainError(f"{len(seen)} names; a certificate holds at most {MAX_NAMES_PER_CERT}")
    return tuple(seen)
