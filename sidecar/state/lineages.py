"""The certificate lineages on disk, read once and kept until something may have changed them.

A pass asks for the lineages several times (plan, render, status), and the loop four
times a second while certbot runs: each file is parsed once (``certs.LineageCache``)
and the whole read is kept until :meth:`LineageStore.forget` (a certbot run, a
placeholder, a new pass). Placeholders for hand-written configs are not real lineages.
``for_sites`` adds the certificates adopted from ``ADOPT_CERTS_DIR`` (``adopted``) for sites
without a lineage of their own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable

from sidecar.core.model import Certificate, Problem, Site
from sidecar.state import adopted, certs, placeholder


class LineageStore:
    def __init__(self, certs_dir: Path, adopt_dir: Path | None = None, cache_file: Path | None = None,
                 helper: bool = False) -> None:
        self.certs_dir = certs_dir
        self.helper = helper  # a second process parses part of many new certificates (certs.read_lineages)
        self.adopt_dir = adopt_dir
        # what the certificates said, kept across restarts: unchanged files are not parsed again at start
        # (ten thousand certificates: about 2 s of start-up); see certs.load_cache
        self.cache_file = cache_file
        self._adopted_cache: adopted.AdoptedCache = {}
        self._adopted: tuple[dict[str, Certificate], list[Problem]] | None = None
        self._cache: certs.LineageCache = {}
        self._unkept = False  # the cache changed since it was last saved
        self._ahead: certs.Ahead | None = None  # certificates being parsed ahead (parse_ahead)
        self._memo: tuple[dict[str, Certificate], list[Problem]] | None = None
        self._generation = 0
        self._lock = threading.Lock()
        self._reading = threading.Lock()

    def read(self) -> tuple[dict[str, Certificate], list[Problem]]:
        """Real lineages on disk (copies: callers may change them) and the problems found."""
        with self._lock:
            memo, generation = self._memo, self._generation
        if memo is None:
            with self._reading:  # (certbot threads read too: one at a time through the cache)
                found, problems = self._read_cached()
            for name in placeholder.placeholder_names(self.certs_dir):
                found.pop(name, None)
            memo = (found, problems)
            with self._lock:
                # A certbot thread may have changed the directory while this read ran: then it
                # is not kept (it may lack the new lineage), the next call reads again.
                if generation == self._generation:
                    self._memo = memo
        return dict(memo[0]), list(memo[1])

    def parse_ahead(self) -> None:
        """Before a read that would parse many certificates (a first start beside ten thousand), start
        parsing them in a helper process now: the caller does other work until it reads."""
        with self._lock:
            if not self.helper or self._memo is not None or self._ahead is not None:
                return
        with self._reading:
            self._load_cache()
            self._ahead = certs.parse_ahead(self.certs_dir, self._cache)

    def _load_cache(self) -> None:
        if self.cache_file is not None and not self._cache:
            self._cache.update(certs.load_cache(self.cache_file))

    def _read_cached(self) -> tuple[dict[str, Certificate], list[Problem]]:
        ahead, self._ahead = self._ahead, None
        if self.cache_file is None:
            return certs.read_lineages(self.certs_dir, self._cache, self.helper, ahead)
        self._load_cache()
        before = {name: sig for name, (sig, _) in self._cache.items()}
        found, problems = certs.read_lineages(self.certs_dir, self._cache, self.helper, ahead)
        if set(before) != set(found) or any(before.get(name) != self._cache[name][0] for name in found):
            for name in set(self._cache) - set(found):
                del self._cache[name]
            self._unkept = True  # (kept once the pass is done: keep)
        return found, problems

    def keep(self) -> None:
        """Keep what the certificates said for the next start, if it changed (after a pass: pickling
        ten thousand takes 0.1 to 0.3 s, which a first start would otherwise spend before planning)."""
        if self.cache_file is None or not self._unkept:
            return
        with self._reading:
            self._unkept = False
            certs.save_cache(self.cache_file, self._cache)

    def certificates(self) -> dict[str, Certificate]:
        return self.read()[0]

    def for_sites(self, sites: Iterable[Site]) -> tuple[dict[str, Certificate], list[Problem]]:
        """The certificate each site is served with: its lineage, else an adopted one; and the problems."""
        found, problems = self.read()
        if self.adopt_dir is None:
            return found, problems
        with self._lock:
            memo = self._adopted
        if memo is None:
            memo = adopted.read_adopted(self.adopt_dir, self._adopted_cache)
            with self._lock:
                self._adopted = memo
        return adopted.adopt(sites, found, memo[0]), problems + memo[1]

    def forget(self) -> None:
        """The certificate directory may have changed."""
        with self._lock:
            self._generation += 1
            self._memo = None
            self._adopted = None
            ahead, self._ahead = self._ahead, None
        if ahead is not None:  # (begun before the change: the next read starts afresh)
            ahead.cancel()
