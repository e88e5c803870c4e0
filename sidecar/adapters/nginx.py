"""Apply rendered files to nginx, transactionally (certbot's Installer contract).

write atomically (temp + fsync + rename) -> ``nginx -t`` -> reload only if it
passed. When the test fails because of one of the sidecar's site files, that
file alone is rolled back (the other sites still go live) and reported; when it
fails for any other reason, every file is restored to what it was before.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

from sidecar.core import nginxconf
from sidecar.core.errors import DockerUnavailable, NginxError
from sidecar.core.names import OWNED_PREFIX, site_filename
from sidecar.adapters.docker_api import Docker
from sidecar.core.render import GLOBAL_FILE, POOL_NAME, POOLS_FILE, SHARED_FILES, NginxTraits, pool_blocks, traits_from
from sidecar.state.files import atomic_write, write_many

log = logging.getLogger(__name__)

PARTIAL_TEST_MIN = 50  # owned files from which changed ones are tested on their own (see _partial_test)
PARTIAL_TEST_MAX = 20  # at most this many changed files tested that way
PARTIAL_TEST_FILE = "partial-test.nginx"  # in sidecar-include/ (no *.conf include picks it up)
RELOAD_TIMEOUT = 120.0  # seconds for nginx to start new workers after SIGHUP (3 s at ten thousand sites), at
# least 10 times the longest `nginx -t` seen (a loaded machine: a minute and more at ten thousand sites)
RELOAD_POLL = (0.02, 0.5)  # seconds between looks for new workers after SIGHUP: first, longest
RELOAD_LOG_AFTER = 0.1  # seconds after SIGHUP from which each look also reads nginx's log (a small
# configuration loads sooner: its reload costs no log read)
RELOAD_TEST_AFTER = 3.0  # seconds without new workers (or 3 longest `nginx -t`): has the load failed?
# (asked only of an nginx whose log the engine cannot read)
BULK_WRITE = 20  # more files than this changed at once: written together, one sync for all (write_many)
_FILE_IN_ERROR = re.compile(r"in (\S+\.conf):(\d+)")
_PROCESS = re.compile(r"^\d+#\d+: ")  # "1#1: " before the message in nginx's error log
_MASTER_EMERG = re.compile(r"\[emerg\] 1#\d+: ")  # nginx's master (PID 1: see DockerNginx._signalled)


class NginxControl(Protocol):
    def test(self) -> tuple[bool, str]: ...

    def reload(self) -> tuple[bool, str]: ...


@dataclass
class ApplyResult:
    changed: bool = False
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # file name -> one-line nginx error, for site files that were held back
    rejected: dict[str, str] = field(default_factory=dict)
    reloaded: bool = False


def install_snippets(conf_dir: Path, webroot: str = "/var/www/acme") -> list[str]:
    """Write the snippets to ``conf_dir/sidecar-include/`` (atomically, only when changed).

    Call it before the first ``nginx -t``: a user file may already include them.
    Returns the names written.
    """
    target = conf_dir / nginxconf.SNIPPETS_DIRNAME
    target.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for name, content in nginxconf.snippet_files(webroot).items():
        path = target / name
        try:
            if path.read_text(encoding="utf-8") == content:
                continue
        except (OSError, ValueError):
            pass
        atomic_write(path, content)
        written.append(name)
    return written


# path -> (inode, mtime, ctime, size) and the content read then: unchanged files are not read again
_OWNED_CACHE: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def owned_files(conf_dir: Path) -> dict[str, str]:
    """The sidecar's files in ``conf_dir`` (name -> exact content). A file whose stat did not
    change since the last call is not read again (ten thousand of them are read every pass)."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    try:
        entries = sorted(os.scandir(conf_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    for entry in entries:
        name = entry.name
        if not (name.startswith(OWNED_PREFIX) and name.endswith(".conf")):
            continue
        seen.add(entry.path)
        try:
            st = entry.stat()
            sig = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            cached = _OWNED_CACHE.get(entry.path)
            if cached is not None and cached[0] == sig:
                found[name] = cached[1]
                continue
            # Exact content (no newline translation, any bytes) so a restore is byte-for-byte.
            with open(entry.path, "rb") as fh:
                found[name] = fh.read().decode("utf-8", "surrogateescape")
            _OWNED_CACHE[entry.path] = (sig, found[name])
        except OSError:
            found[name] = ""
    prefix = os.path.join(str(conf_dir), "")
    for path in [p for p in _OWNED_CACHE if p.startswith(prefix) and p not in seen]:
        del _OWNED_CACHE[path]
    return found


def _share(conf_dir: Path, contents: Mapping[str, str]) -> None:
    """Where a cached file's content equals ``contents`` (the rendered files), keep one copy of
    the text, not two (ten thousand site files: 25 MB)."""
    for name, text in contents.items():
        path = os.path.join(str(conf_dir), name)
        cached = _OWNED_CACHE.get(path)
        if cached is not None and cached[1] is not text and cached[1] == text:
            _OWNED_CACHE[path] = (cached[0], text)


def _culprit(output: str, target: Mapping[str, str]) -> tuple[str | None, bool, int]:
    """The owned file ``nginx -t`` blames, whether through a snippet that file includes, and the line.

    An error in ``<SNIPPETS_DIR>/<site>/x.conf`` is that site's: its file is held back
    (even when unchanged: the snippet would break every later reload for all sites).
    """
    for m in _FILE_IN_ERROR.finditer(output):
        path = Path(m.group(1))
        if path.name.startswith(OWNED_PREFIX):
            return path.name, False, int(m.group(2))
        owner = site_filename(path.parent.name)
        if f"include {path.parent}/*.conf;" in target.get(owner, ""):
            return owner, True, int(m.group(2))
    return None, False, 0


def _pool_at(pools_text: str, line: int) -> tuple[str, str] | None:
    """The pool whose ``upstream`` block holds ``line`` of the pools file: its name and block."""
    for name, (first, last, block) in pool_blocks(pools_text).items():
        if first <= line <= last:
            return name, block
    return None


def first_error_line(output: str) -> str:
    for line in output.splitlines():
        if "[emerg]" in line or "[alert]" in line or "[crit]" in line or "[error]" in line:
            return _PROCESS.sub("", line.split("] ", 1)[-1].strip())[:300]
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]


def _set(conf_dir: Path, name: str, content: str | None) -> None:
    path = conf_dir / name
    if content is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    else:
        atomic_write(path, content)


def apply(
    conf_dir: Path,
    wanted: Mapping[str, str],
    control: NginxControl,
    on_reject: Callable[[str, str], None] | None = None,
    max_isolations: int = 20,
    verify: Callable[[list[str]], str] | None = None,
    partial_test: bool = False,
) -> ApplyResult:
    """Make the owned files in ``conf_dir`` equal ``wanted``; test; reload.

    ``verify(written)`` runs after the reload and returns "" when nginx really serves
    what was written (for example the new certificate over TLS with SNI); anything
    else puts the previous files back, reloads them and raises ``NginxError``.

    ``partial_test``: a few changed site files of a large configuration may be tested on their
    own (``_partial_test``), so that the reload is the only full parse.
    """
    before = owned_files(conf_dir)
    _share(conf_dir, wanted)
    result = ApplyResult()
    target = dict(wanted)
    if target == before:
        return result
    conf_dir.mkdir(parents=True, exist_ok=True)

    def put(files: Mapping[str, str]) -> None:
        current = owned_files(conf_dir)
        changed = {name: content for name, content in files.items() if current.get(name) != content}
        if len(changed) > BULK_WRITE:
            write_many(conf_dir, changed)
        else:
            for name, content in changed.items():
                _set(conf_dir, name, content)
        for name in current:
            if name not in files:
                _set(conf_dir, name, None)

    def restore(what: str, detail: str = "", output: str = "", reload: bool = False) -> NginxError:
        """Put the previous files back (and reload them); the error says whether that worked."""
        detail = f": {detail}" if detail else ""
        try:
            put(before)
        except OSError as exc:
            return NginxError(f"{what}; restoring the previous configuration failed too ({exc}){detail}", output)
        if reload:
            ok, out = control.reload()
            if not ok:
                return NginxError(f"{what}, previous configuration restored but reloading it failed "
                                  f"({first_error_line(out)}){detail}", output)
        return NginxError(f"{what}, previous configuration restored{detail}", output)

    try:
        put(target)
    except OSError as exc:  # disk full, read-only volume: nothing half-written stays
        raise restore("cannot write the nginx config", str(exc)) from exc

    bad_pools: set[str] = set()  # pools nginx refused (a host name that no longer resolves)

    def hold_back(culprit: str, reason: str, via_snippet: bool) -> None:
        """Hold back this one site's file: its previous version if this pass changed it (with the
        pools it proxies to), else leave it out altogether (an unchanged file that fails now, e.g. an
        upstream name that no longer resolves, must not block every other site's updates)."""
        result.rejected[culprit] = reason
        if on_reject is not None:
            on_reject(culprit, reason)
        previous = before.get(culprit)
        if (previous is not None and previous != target.get(culprit) and not via_snippet
                and not set(POOL_NAME.findall(previous)) & bad_pools):
            target[culprit] = previous
            _add_pools(target, before, previous)
        else:
            target.pop(culprit, None)

    def full_test() -> None:
        """``nginx -t`` of the whole configuration; a site file it blames is held back (for a pool
        it blames, every site file that proxies to that pool)."""
        for _ in range(max_isolations + 1):
            ok, output = control.test()
            if ok:
                return
            culprit, via_snippet, line = _culprit(output, target)
            reason = first_error_line(output)
            pool = _pool_at(target.get(POOLS_FILE, ""), line) if culprit == POOLS_FILE else None
            if pool is not None:
                name, block = pool
                bad_pools.add(name)
                target[POOLS_FILE] = target[POOLS_FILE].replace(block, "")
                for user in [n for n, text in target.items() if n not in SHARED_FILES and name in text]:
                    hold_back(user, reason, False)
            elif culprit is None or culprit in SHARED_FILES:
                # Not one site's file: put everything back as it was.
                raise restore("nginx -t failed", reason, output)
            else:
                hold_back(culprit, reason, via_snippet)
            try:
                put(target)
            except OSError as exc:
                raise restore("cannot write the nginx config", str(exc)) from exc
        raise restore("nginx -t kept failing", output=output)

    partial = _partial_test(conf_dir, before, target, control) if partial_test else False
    if not partial:
        full_test()

    def changes() -> bool:
        after = owned_files(conf_dir)
        _share(conf_dir, target)
        result.written = sorted(n for n in after if before.get(n) != after[n])
        result.removed = sorted(n for n in before if n not in after)
        result.changed = bool(result.written or result.removed)
        return result.changed

    if not changes():
        return result
    ok, output = control.reload()
    if not ok:
        # nginx goes on with the configuration it had. A full test says why (after a partial test;
        # or a file changed since the test) and holds back the site file it blames, then the rest
        # is tried once more; if that fails too, the files nginx has loaded are put back (no reload).
        log.warning("nginx did not load the new configuration (%s); testing all of it", first_error_line(output))
        full_test()
        if not changes():
            return result
        ok, output = control.reload()
        if not ok:
            raise restore("nginx did not load the new configuration", first_error_line(output), output)
    result.reloaded = True
    if verify is not None:
        problem = verify(result.written)
        if problem:
            raise restore(f"after the reload nginx did not serve what was written ({problem})", reload=True)
    return result


def _add_pools(target: dict[str, str], before: Mapping[str, str], text: str) -> None:
    """Put back into the target's pools file the blocks ``text`` proxies to that it lacks (from before)."""
    have = pool_blocks(target.get(POOLS_FILE, ""))
    old = pool_blocks(before.get(POOLS_FILE, ""))
    missing = [old[n][2] for n in sorted(set(POOL_NAME.findall(text))) if n not in have and n in old]
    if missing:
        target[POOLS_FILE] = target.get(POOLS_FILE, "") + "\n" + "\n".join(missing)


def partial_config(conf_dir: Path, names: list[str], pools: str = "") -> str:
    """An nginx.conf of the sidecar's global file, ``names`` and the ``pools`` blocks alone, for ``nginx -t -c``."""
    includes = "".join(f"    include {conf_dir / n};\n" for n in [GLOBAL_FILE, *names])
    return ("# nginx-acme-sidecar: changed site files tested on their own (nginx -t -c); never loaded\n"
            "events {}\nhttp {\n" + includes + pools + "}\n")


def _partial_test(conf_dir: Path, before: Mapping[str, str], target: Mapping[str, str], control: NginxControl) -> bool:
    """True when the changed site files pass ``nginx -t`` in a configuration of their own.

    Only for a large configuration (a full test parses every file and loads every certificate:
    2.5 s at ten thousand sites) and a few changed files (the global file, which names every
    site's names for port 80, changes with every site added or removed, and is in it anyway).
    Of the pools file, only the blocks the changed site files proxy to and the blocks that are
    new or changed go in. What this cannot see (a clash with another file, an http-level setting
    the file relies on) makes the reload fail instead, which ``apply`` then handles with a full
    test. False: test it all."""
    test_config = getattr(control, "test_config", None)
    changed = [n for n, text in target.items() if before.get(n) != text]
    if (test_config is None or len(before) < PARTIAL_TEST_MIN or len(changed) > PARTIAL_TEST_MAX
            or GLOBAL_FILE not in before or (POOLS_FILE in target and POOLS_FILE not in before)):
        return False
    sites = [n for n in changed if n != POOLS_FILE]
    new, old = pool_blocks(target.get(POOLS_FILE, "")), pool_blocks(before.get(POOLS_FILE, ""))
    needed = {p for n in sites for p in POOL_NAME.findall(target[n])}
    needed |= {p for p, block in new.items() if p not in old or old[p][2] != block[2]}
    pools = "".join(new[p][2] for p in sorted(needed) if p in new)
    if not sites and not pools:
        return True  # only removals: nothing new for nginx to parse
    path = conf_dir / nginxconf.SNIPPETS_DIRNAME / PARTIAL_TEST_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, partial_config(conf_dir, sites, pools))
    except OSError:
        return False
    ok, output = test_config(str(path))
    if not ok:
        log.info("changed site files failed nginx -t on their own (%s); testing the whole configuration",
                 first_error_line(output))
    return bool(ok)


# container id -> whether its PID 1 is nginx's master with its children listed in /proc (see reload)
_SIGNALS: dict[str, bool] = {}
_NO_TOP: set[str] = set()  # containers whose processes the engine cannot list (see _workers)
_NO_LOGS: set[str] = set()  # containers whose log the engine cannot read (see _load_errors)
_LONGEST_TEST: dict[str, float] = {}  # container id -> seconds of its longest full `nginx -t` (see reload)


class DockerNginx:
    """``nginx -t`` / reload / ``nginx -V`` in the nginx container, through ``docker exec``.

    A reload is SIGHUP to the master through the Docker API (``POST /containers/{id}/kill``),
    not ``nginx -s reload``, which parses the whole configuration once more just to find the
    master's PID (2.5 s at ten thousand sites); it has worked when the master started new
    worker processes, which it does only once the new configuration loaded. The engine lists
    them (``GET /containers/{id}/top``: 15 ms, against 50 ms for a ``docker exec`` that also
    takes CPU inside nginx's container while its master is loading). An nginx that is not
    its container's PID 1 (started by a shell or a supervisor) gets ``nginx -s reload``."""

    def __init__(self, docker: Docker, container_id: str) -> None:
        self.docker = docker
        self.container_id = container_id

    def test(self) -> tuple[bool, str]:
        started = time.monotonic()
        r = self.docker.exec(self.container_id, ["nginx", "-t"])
        took = time.monotonic() - started
        _LONGEST_TEST[self.container_id] = max(took, _LONGEST_TEST.get(self.container_id, 0.0))
        log.debug("nginx -t: %s in %.2fs", "passed" if r.exit_code == 0 else "failed", took)
        return r.exit_code == 0, r.output

    def test_config(self, path: str) -> tuple[bool, str]:
        """``nginx -t -c PATH``: a configuration of its own (see ``partial_config``)."""
        started = time.monotonic()
        r = self.docker.exec(self.container_id, ["nginx", "-t", "-c", path])
        log.debug("nginx -t -c %s: %s in %.2fs", path, "passed" if r.exit_code == 0 else "failed",
                  time.monotonic() - started)
        return r.exit_code == 0, r.output

    def reload(self) -> tuple[bool, str]:
        if not self._signalled():
            r = self.docker.exec(self.container_id, ["nginx", "-s", "reload"])
            return r.exit_code == 0, r.output
        old = self._workers()
        by_engine = self.container_id not in _NO_TOP  # (the same way of looking until the end)
        since = time.time()  # (nginx's log from here on: the engine's clock is this host's)
        started = time.monotonic()
        self.docker.kill(self.container_id, "SIGHUP")
        timeout = max(RELOAD_TIMEOUT, 10 * _LONGEST_TEST.get(self.container_id, 0.0))
        test_at = max(RELOAD_TEST_AFTER, 3 * _LONGEST_TEST.get(self.container_id, 0.0))
        deadline = started + timeout
        polls = failed = 0
        while (elapsed := time.monotonic() - started) < timeout:
            # Every 20 ms at first, then a twentieth of the time so far (at most 0.5 s): a big
            # configuration loads for seconds, and every look costs CPU the loading master needs.
            time.sleep(min(RELOAD_POLL[1], max(RELOAD_POLL[0], elapsed / 20), max(0.0, deadline - time.monotonic())))
            polls += 1
            try:
                workers = self._workers(by_engine)
            except DockerUnavailable:
                failed += 1
                if failed >= 3:  # (the container gone, the engine down: not worth two minutes of looking)
                    raise
                continue
            if workers - old:
                log.debug("SIGHUP: new nginx workers after %.2fs (%d looks)", time.monotonic() - started, polls)
                return True, ""
            # No new workers yet: still loading, or the load failed and the old configuration stays
            # (a file changed after `nginx -t`, or what only a reload checks, such as a shared zone
            # declared differently than before). nginx says so in its error log. Only where that
            # cannot be read, `nginx -t` now and then (it takes the CPU the loading master needs).
            refused = self._load_errors(since) if elapsed >= RELOAD_LOG_AFTER else ""
            if not refused and self.container_id in _NO_LOGS and time.monotonic() - started >= test_at:
                ok, output = self.test()
                refused = "" if ok else output
                test_at = 2 * (time.monotonic() - started)
            if refused:
                log.debug("SIGHUP: nginx did not load the configuration (%.2fs, %d looks)",
                          time.monotonic() - started, polls)
                return False, refused
        return False, (f"nginx: [emerg] no new worker processes {timeout:.0f} s after SIGHUP: "
                       "the new configuration did not load (nginx -t says why)")

    def _load_errors(self, since: float) -> str:
        """The master's ``[emerg]`` lines in nginx's log (its container's standard error, as in the
        official image) since ``since``: a reload it refused. "" when none, or none can be read."""
        if self.container_id in _NO_LOGS:
            return ""
        try:
            lines = self.docker.log_lines(self.container_id, since)
        except DockerUnavailable as exc:
            log.debug("container %s: %s; a refused reload is seen by nginx -t instead", self.container_id[:12], exc)
            _NO_LOGS.add(self.container_id)
            return ""
        return "\n".join(line for line in lines if _MASTER_EMERG.search(line))

    def _workers(self, by_engine: bool | None = None) -> set[str]:
        """PIDs of nginx's worker processes (the host's or the container's: compare only like with
        like). ``by_engine``: listed by the engine (raises when it cannot), or by ``cat`` inside the
        container; None: the engine's listing unless this container's failed once."""
        if by_engine or (by_engine is None and self.container_id not in _NO_TOP):
            try:
                return {str(pid) for pid in self.docker.children(self.container_id)}
            except DockerUnavailable as exc:
                if by_engine:
                    raise
                log.debug("container %s: %s; looking inside it instead", self.container_id[:12], exc)
                _NO_TOP.add(self.container_id)
        r = self.docker.exec(self.container_id, ["cat", "/proc/1/task/1/children"])
        return set(r.output.split()) if r.exit_code == 0 else set()

    def _signalled(self) -> bool:
        known = _SIGNALS.get(self.container_id)
        if known is None:
            cmdline = self.docker.exec(self.container_id, ["cat", "/proc/1/cmdline"])
            known = (cmdline.exit_code == 0 and cmdline.output.startswith("nginx: master process")
                     and bool(self._workers()))
            _SIGNALS[self.container_id] = known
        return known

    def traits(self) -> tuple[NginxTraits, str]:
        """What the rendered config may use (version, IPv6, post-quantum groups), and ``nginx -V``'s first line."""
        version = self.docker.exec(self.container_id, ["nginx", "-V"]).output
        v6 = self.docker.exec(self.container_id, ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"])
        return traits_from(version, v6.output if v6.exit_code == 0 else ""), (version.splitlines() or ["?"])[0].strip()
