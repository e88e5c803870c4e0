"""Certificates another tool made, served as they are until they are due (``ADOPT_CERTS_DIR``).

nginx-proxy's certificate volume, as acme-companion lays it out (mounted read-only; never written):

    <dir>/<name>/fullchain.pem, key.pem, cert.pem, chain.pem   one per certificate, named after its first host
    <dir>/<host>.crt -> ./<name>/fullchain.pem                 one link per host (also .key, .chain.pem)
    <dir>/<host>.crt, <dir>/<host>.key                         put there by hand for nginx-proxy
    <dir>/_test_<name>/                                        LETSENCRYPT_TEST (staging) certificates: skipped

``read_adopted`` indexes them by directory and host name. ``adopt`` (pure) gives each container or
sites-file site that has no lineage of its own the adopted certificate that covers its names, with
the paths nginx is pointed at. The planner then treats it as the site's certificate: valid, nothing
happens; due, the sidecar requests a lineage of its own, which wins from then on.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from sidecar.core.model import Certificate, Problem, Site, SourceKind
from sidecar.state.certs import parse_certificate

TEST_PREFIX = "_test_"
# Entry names end up in nginx's config (ssl_certificate): only what nginx reads as a plain path.
_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# path -> (what the file looked like, the certificate read from it)
AdoptedCache = dict[str, tuple[tuple[int, int, int], Certificate]]


def _read(chain: Path, key: Path, cache: AdoptedCache) -> Certificate:
    st = chain.stat()  # (follows links: a replaced target is a change)
    signature = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = cache.get(str(chain))
    if cached is not None and cached[0] == signature:
        return cached[1]
    cert = parse_certificate(chain.read_bytes(), chain.parent.name, str(chain), str(key))
    cache[str(chain)] = (signature, cert)
    return cert


def read_adopted(directory: Path, cache: AdoptedCache | None = None) -> tuple[dict[str, Certificate], list[Problem]]:
    """Every certificate in ``directory``, keyed by directory name and by ``<host>`` of ``<host>.crt``."""
    cache = {} if cache is None else cache
    found: dict[str, Certificate] = {}
    problems: list[Problem] = []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return found, problems
    by_chain: dict[str, Certificate] = {}
    for entry in entries:  # the directories first: links point into them
        base = directory / entry
        if entry.startswith((TEST_PREFIX, ".")) or not base.is_dir() or not (base / "fullchain.pem").exists():
            continue
        if not _ENTRY.fullmatch(entry):
            problems.append(Problem(f"adopted certificate {base}", "skipped: its name is not a plain file name"))
            continue
        chain, key = base / "fullchain.pem", base / "key.pem"
        try:
            if not key.exists():
                raise ValueError("key.pem is missing")
            cert = _read(chain, key, cache)
        except (OSError, ValueError) as exc:
            problems.append(Problem(f"adopted certificate {base}", f"unreadable: {exc}"))
            continue
        found[entry] = by_chain[os.path.realpath(chain)] = replace(cert, name=entry, adopted_from=str(base))
    for entry in entries:
        if not entry.endswith(".crt") or entry.startswith("."):
            continue
        host, path = entry[: -len(".crt")], directory / entry
        target = os.path.realpath(path)
        if host in found or Path(target).parent.name.startswith(TEST_PREFIX):
            continue
        if target in by_chain:
            found[host] = by_chain[target]
            continue
        key = directory / f"{host}.key"
        if not _ENTRY.fullmatch(host) or not key.exists():
            continue  # (nginx-proxy's own leftovers: a .crt without its key is not served by it either)
        try:
            found[host] = replace(_read(path, key, cache), name=host, adopted_from=str(path))
        except (OSError, ValueError) as exc:
            problems.append(Problem(f"adopted certificate {path}", f"unreadable: {exc}"))
    return found, problems


def covered(name: str, names: frozenset[str]) -> bool:
    """Whether a certificate for ``names`` is valid for host ``name`` (one wildcard level)."""
    parent = name.partition(".")[2]
    return name in names or (parent.count(".") >= 1 and f"*.{parent}" in names)


def adopt(sites: Iterable[Site], lineages: Mapping[str, Certificate],
          adopted: Mapping[str, Certificate]) -> dict[str, Certificate]:
    """``lineages`` plus, for each container or sites-file site without one, the adopted certificate
    to serve: one covering all its names (the one named after the site first, then the one that
    lasts longest), else the one named after the site for the names it covers (the planner then
    asks for the missing names). Its ``names`` are the site's names it covers, so a certificate with
    more names (a shared or wildcard one) is served as it is instead of being replaced."""
    result = dict(lineages)
    index: dict[str, list[Certificate]] = {}
    for one in {c.adopted_from: c for c in adopted.values()}.values():
        for name in one.names:
            index.setdefault(name, []).append(one)
    for site in sites:
        if site.name in result or site.source_kind not in (SourceKind.CONTAINER, SourceKind.FILE):
            continue
        first = site.domains[0]
        candidates = index.get(first, []) + index.get("*." + first.partition(".")[2], [])
        full = [c for c in candidates if all(covered(d, c.names) for d in site.domains)]
        own = adopted.get(site.name)
        cert = own if own in full else max(full, key=lambda c: (c.not_after, c.adopted_from), default=own)
        if cert is None:
            continue
        names = frozenset(d for d in site.domains if covered(d, cert.names))
        if names:
            result[site.name] = replace(cert, name=site.name, names=names)
    return result
