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
        challenge: dns-01                                        # wildcards need it
        dns_provider: cloudflare

A bad entry is reported and left out; the other entries still count. A file
that cannot be parsed at all raises ``InputError`` so the caller can keep the
last good version.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from sidecar.core import options
from sidecar.core.domains import DomainError, as_ip_address, looks_numeric, normalize_domains, parse_domain_list
from sidecar.core.errors import InputError
from sidecar.core.model import Problem, Site, SourceKind, Upstream
from sidecar.state import memo
from sidecar.state.files import atomic_write

log = logging.getLogger("sidecar")

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
    address = as_ip_address(host) if looks_numeric(host) else None
    if address is not None:
        host = address
    elif not _HOST.fullmatch(host):
        raise ValueError(f"{text[:80]!r}: host {host[:80]!r} is not a host name or IP address")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:
        raise ValueError(f"{text[:80]!r}: port must be 1-65535")
    return Upstream(scheme=parts.scheme, host=host, port=port)


def _domains(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return parse_domain_list(raw, wildcard=True)
    if isinstance(raw, list) and all(isinstance(d, str) for d in raw):
        return normalize_domains(raw, wildcard=True)
    raise DomainError("domains must be a list of names or a comma-separated string")


def _origin(index: int, option_key: str) -> str:
    return f"sites file entry {index}: {_file_key(option_key)}"


def _file_key(option_key: str) -> str:
    """``header.X`` (the option key) is ``headers: {X: ...}`` in the file."""
    if option_key.startswith(options.HEADER_PREFIX):
        return "headers." + option_key[len(options.HEADER_PREFIX):]
    return option_key


# Entry index and its text -> what it parsed to (a site, or the problem with it): see parse_sites_file.
EntryCache = dict[tuple[int, str], "Site | Problem"]
_SITES_LINE = re.compile(r"sites:[ \t]*(#.*)?")
_ENTRY_START = re.compile(r"( *)- ")
PER_ENTRY_MAX = 50  # changed entries parsed one by one at most; more: the whole file at once
# What could tie one entry to another (anchors, aliases, tags, directives, documents): parse it whole.
_NOT_PER_ENTRY = re.compile(r"(^|[\s\[{,:])[&*!%@`|>]|^(---|\.\.\.)|<<|\t", re.M)


def _entry_chunks(text: str) -> list[str] | None:
    """The texts of the entries of a plain ``sites:`` list, one per entry, in order; None when the
    file is anything else (its entries are not independent, or the layout is not the plain one)."""
    if _NOT_PER_ENTRY.search(text):
        return None
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    if i == len(lines) or not _SITES_LINE.fullmatch(lines[i].rstrip("\r\n")):
        return None
    chunks: list[list[str]] = []
    indent = -1
    for line in lines[i + 1:]:
        body = line.strip()
        if not body or body.startswith("#"):
            if chunks:
                chunks[-1].append(line)
            continue
        m = _ENTRY_START.match(line)
        width = len(line) - len(line.lstrip(" "))
        if m is not None and (indent < 0 or len(m.group(1)) == indent):
            indent = len(m.group(1))
            chunks.append([line])
        elif chunks and width > indent:
            chunks[-1].append(line)
        else:
            return None
    return ["".join(c) for c in chunks]


def parse_sites_file(text: str, path: str, defaults: options.Defaults = options.Defaults(),
                     cache: EntryCache | None = None) -> tuple[list[Site], list[Problem]]:
    """Parse the whole file. Raise InputError when nothing in it can be trusted.

    ``cache`` (kept by the caller between calls, for the same ``defaults``): an entry whose text
    and place did not change is not parsed again (the plain layout only: ``_entry_chunks``). At ten
    thousand entries a full parse takes a second; one added entry then costs one entry's parse."""
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"sites file {path}", f"larger than {MAX_FILE_BYTES} bytes")
    chunks = _entry_chunks(text) if cache is not None else None
    if chunks is not None and cache is not None:
        missed = sum(1 for index, chunk in enumerate(chunks, start=1) if (index, chunk) not in cache)
        # (one load of the whole file is faster than many small ones: a few changed entries only)
        found = _parse_chunks(chunks, path, defaults, cache) if missed <= PER_ENTRY_MAX else None
        if found is not None:
            return found
    try:
        # libyaml's loader when PyYAML has it (about 10x faster on a file of a thousand sites)
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
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
    results = [_parse_entry(index, entry, path, defaults) for index, entry in enumerate(entries, start=1)]
    if chunks is not None and cache is not None:
        cache.clear()
        if len(chunks) == len(results):  # (the split found the entries the whole file has, in order)
            cache.update(((index, chunk), r) for index, (chunk, r) in enumerate(zip(chunks, results), start=1))
    return _split(results)


def _split(results: list[Site | Problem]) -> tuple[list[Site], list[Problem]]:
    return [r for r in results if isinstance(r, Site)], [r for r in results if isinstance(r, Problem)]


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_chunks(chunks: list[str], path: str, defaults: options.Defaults,
                  cache: EntryCache) -> tuple[list[Site], list[Problem]] | None:
    """Each entry on its own, from ``cache`` when its text and place are unchanged (the cache then
    holds only this file's entries). None when one does not parse as one list item on its own (the
    whole file is then parsed, and reports the error with its line)."""
    results: list[Site | Problem] = []
    kept: EntryCache = {}
    for index, chunk in enumerate(chunks, start=1):
        result = cache.get((index, chunk))
        if result is None:
            try:
                item = yaml.load(chunk, Loader=_LOADER)  # noqa: S506 - a safe loader
            except yaml.YAMLError:
                return None
            if not isinstance(item, list) or len(item) != 1:
                return None
            result = _parse_entry(index, item[0], path, defaults)
        kept[(index, chunk)] = result
        results.append(result)
    cache.clear()
    cache.update(kept)
    return _split(results)


def _parse_entry(index: int, entry: object, path: str, defaults: options.Defaults) -> Site | Problem:
    """One entry of the ``sites`` list: its site, or the problem with it."""
    source = f"sites file {path} entry {index}"
    if not isinstance(entry, dict):
        return Problem(source, "must be a mapping with 'domains' and 'upstream'")
    unknown = sorted(str(k) for k in entry if k not in ENTRY_KEYS)
    if unknown:
        return Problem(source, f"unknown key {unknown[0][:40]!r} (known: {', '.join(ENTRY_KEYS)})")
    try:
        domains = _domains(entry.get("domains"))
    except DomainError as exc:
        return Problem(source, f"domains: {exc}")
    source = f"sites file {path} entry {index} ({domains[0]})"
    try:
        upstream = parse_upstream(entry.get("upstream"))
    except ValueError as exc:
        return Problem(source, f"upstream: {exc}")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict):
        return Problem(source, "headers: must be a mapping of header name to value")
    try:
        site_options = options.build(
            {k: v for k, v in entry.items() if k in options.OPTION_KEYS},
            list(headers.items()),
            domains,
            functools.partial(_origin, index),
            defaults,
        )
    except options.OptionError as exc:
        return Problem(source, f"{_file_key(exc.key)}: {exc}")
    return Site(
        domains=domains,
        upstreams=(upstream,),
        source=source,
        source_kind=SourceKind.FILE,
        notes=(f"upstream {upstream.url} from the sites file",),
        options=site_options,
    )


LAST_GOOD = "sites-last-good.yml"
PARSED = "sites-parsed.cache"  # the last parse's result, for the next start (see sidecar.state.memo)
PARSED_MIN_BYTES = 64_000  # (about a thousand entries: smaller files parse in a tenth of a second)


class SitesFileSource:
    """The sites file, read on every pass; a broken version keeps the last good one serving.

    The last good text is also kept in the state volume, so a restart with a broken file
    starts from it. ``error`` is the current problem with the file ("" when it is valid);
    ``changed_error`` says whether it is new since the previous read (to log it once).
    """

    def __init__(self, path: Path | None, state_dir: Path,
                 defaults: options.Defaults = options.Defaults()) -> None:
        self.path = path
        self.defaults = defaults
        self.last_good = state_dir / LAST_GOOD
        self.parsed = state_dir / PARSED
        self._unkept: tuple[str, object] | None = None
        self._text: str | None = None
        self._sites: list[Site] | None = None
        self._entries: EntryCache = {}  # (see parse_sites_file)
        self._problems: list[Problem] = []
        self.error = ""

    def read(self) -> tuple[list[Site], list[Problem]]:
        path = self.path
        if path is None:
            return [], []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            return self._keep_last_good(f"sites file {path}", f"unreadable: {exc}")
        if text == self._text and self._sites is not None:
            return self._sites, self._problems
        big = len(text) >= PARSED_MIN_BYTES
        parsed_key = memo.key(text, str(path), repr(self.defaults)) if big else ""
        found = memo.load(self.parsed, parsed_key) if big and self._sites is None else None  # (at start)
        if found is not None:
            sites, problems, self._entries = found
        else:
            try:
                sites, problems = parse_sites_file(text, str(path), self.defaults, self._entries)
            except InputError as exc:
                return self._keep_last_good(exc.source, exc.message)
            if big:  # (kept once the pass is done: keep_parsed)
                self._unkept = (parsed_key, (sites, problems, dict(self._entries)))
            elif self._sites is None:
                memo.forget(self.parsed)
        self._text, self._sites, self._problems, self.error = text, sites, problems, ""
        try:
            if not self.last_good.exists() or self.last_good.read_text(encoding="utf-8") != text:
                atomic_write(self.last_good, text)
        except OSError as exc:
            log.warning("cannot keep a copy of the sites file in %s: %s", self.last_good, exc)
        return sites, problems

    def keep_parsed(self) -> None:
        """Keep the last parse of a big file for the next start, in the background (pickling ten
        thousand sites takes a tenth of a second: not during a pass)."""
        if self._unkept is not None:
            (key, value), self._unkept = self._unkept, None
            threading.Thread(target=memo.save, args=(self.parsed, key, value), name="sites-file-cache",
                             daemon=True).start()

    def _keep_last_good(self, source: str, error: str) -> tuple[list[Site], list[Problem]]:
        """The file as a whole is broken: its last good version keeps serving, and the problem
        says so (reported once, and 'resolved' once the file is valid again, like any problem)."""
        if self._sites is None:
            # Just started with a broken file: fall back to the copy kept by the previous run.
            try:
                self._sites, self._problems = parse_sites_file(self.last_good.read_text(encoding="utf-8"),
                                                               str(self.path), self.defaults)
            except (OSError, InputError):
                pass
        kept = self._sites or []
        self.error = f"{error}; keeping the last good version ({len(kept)} site{'' if len(kept) == 1 else 's'})"
        return kept, [*self._problems, Problem(source, self.error)]
