"""YAML sites file -> sites. Pure: takes the file's text, returns sites and problems.

Format (``SITES_FILE``)::

    sites:
      - domains: [static.example.com, www.static.example.com]   # or "a.com, b.com"
        upstream: http://10.0.0.5:8080                           # http(s)://host[:port]
        # optional, the same as the labels (see ``options``):
        tls: modern
        hsts: "63072000; includeSubDomains"                      # or off
        max_body_size: 10m
        redirect: www-to-apex
        websocket: off
        key_type: rsa
        profile: tlsserver
        headers: {X-Frame-Options: DENY}

A bad entry is reported and left out; the other entries still count. A file
that cannot be parsed at all raises ``InputError`` so the caller can keep the
last good version.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from sidecar.core import options
from sidecar.core.domains import DomainError, normalize_domains, parse_domain_list
from sidecar.core.errors import InputError
from sidecar.core.model import Problem, Site, SourceKind, Upstream

ENTRY_KEYS = ("domains", "upstream") + options.OPTION_KEYS + ("headers",)
MAX_FILE_BYTES = 1_000_000
_HOST = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")


def parse_upstream(raw: object) -> Upstream:
    """``http(s)://host[:port]`` -> Upstream; raise ValueError with a short reason."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("upstream must be a URL like http://app:8080")
    text = raw.strip()
    if not text.isprintable() or " " in text:
        # urlsplit silently drops tabs and newlines ("http://ap\tp" would mean "http://app").
        raise ValueError(f"{text[:80]!r}: spaces and control characters are not allowed in a URL")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text[:80]!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text[:80]!r}: scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text[:80]!r}: only scheme, host and port are allowed (no path, query or credentials)")
    host = parts.hostname or ""
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not _HOST.fullmatch(host):
            raise ValueError(f"{text[:80]!r}: host {host[:80]!r} is not a host name or IP address") from None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:
        raise ValueError(f"{text[:80]!r}: port must be 1-65535")
    return Upstream(scheme=parts.scheme, host=host, port=port)


def _domains(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return parse_domain_list(raw)
    if isinstance(raw, list) and all(isinstance(d, str) for d in raw):
        return normalize_domains(raw)
    raise DomainError("domains must be a list of names or a comma-separated string")


def _origin(index: int, option_key: str) -> str:
    return f"sites file entry {index}: {_file_key(option_key)}"


def _file_key(option_key: str) -> str:
    """``header.X`` (the option key) is ``headers: {X: ...}`` in the file."""
    if option_key.startswith(options.HEADER_PREFIX):
        return "headers." + option_key[len(options.HEADER_PREFIX):]
    return option_key


def parse_sites_file(text: str, path: str) -> tuple[list[Site], list[Problem]]:
    """Parse the whole file. Raise InputError when nothing in it can be trusted."""
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"sites file {path}", f"larger than {MAX_FILE_BYTES} bytes")
    try:
        # libyaml's loader when PyYAML has it (about 10x faster on a file of a thousand sites)
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"sites file {path}{where}", f"invalid YAML: {reason}") from None
    if data is None:
        return [], []
    if not isinstance(data, dict) or set(data) - {"sites"}:
        raise InputError(f"sites file {path}", "top level must be a mapping with a single key 'sites'")
    entries = data.get("sites") or []
    if not isinstance(entries, list):
        raise InputError(f"sites file {path}", "'sites' must be a list")

    sites: list[Site] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries, start=1):
        source = f"sites file {path} entry {index}"
        if not isinstance(entry, dict):
            problems.append(Problem(source, "must be a mapping with 'domains' and 'upstream'"))
            continue
        unknown = sorted(str(k) for k in entry if k not in ENTRY_KEYS)
        if unknown:
            problems.append(Problem(source, f"unknown key {unknown[0][:40]!r} (known: {', '.join(ENTRY_KEYS)})"))
            continue
        try:
            domains = _domains(entry.get("domains"))
        except DomainError as exc:
            problems.append(Problem(source, f"domains: {exc}"))
            continue
        source = f"sites file {path} entry {index} ({domains[0]})"
        try:
            upstream = parse_upstream(entry.get("upstream"))
        except ValueError as exc:
            problems.append(Problem(source, f"upstream: {exc}"))
            continue
        headers = entry.get("headers") or {}
        if not isinstance(headers, dict):
            problems.append(Problem(source, "headers: must be a mapping of header name to value"))
            continue
        try:
            site_options = options.build(
                {k: v for k, v in entry.items() if k in options.OPTION_KEYS},
                list(headers.items()),
                domains,
                functools.partial(_origin, index),
            )
        except options.OptionError as exc:
            problems.append(Problem(source, f"{_file_key(exc.key)}: {exc}"))
            continue
        sites.append(
            Site(
                domains=domains,
                upstreams=(upstream,),
                source=source,
                source_kind=SourceKind.FILE,
                notes=(f"upstream {upstream.url} from the sites file",),
                options=site_options,
            )
        )
    return sites, problems

