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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

from sidecar.core import nginxconf
from sidecar.core.errors import NginxError
from sidecar.core.names import OWNED_PREFIX, site_filename
from sidecar.adapters.docker_api import Docker
from sidecar.core.render import GLOBAL_FILE, NginxTraits, traits_from
from sidecar.state.files import atomic_write

log = logging.getLogger(__name__)

_FILE_IN_ERROR = re.compile(r"in (\S+\.conf):(\d+)")


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


def owned_files(conf_dir: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return found
    for name in names:
        if name.startswith(OWNED_PREFIX) and name.endswith(".conf"):
            try:
                # Exact content (no newline translation, any bytes) so a restore is byte-for-byte.
                found[name] = (conf_dir / name).read_bytes().decode("utf-8", "surrogateescape")
            except OSError:
                found[name] = ""
    return found


def _culprit(output: str, target: Mapping[str, str]) -> tuple[str | None, bool]:
    """The owned file ``nginx -t`` blames, and whether through a snippet that file includes.

    An error in ``<SNIPPETS_DIR>/<site>/x.conf`` is that site's: its file is held back
    (even when unchanged: the snippet would break every later reload for all sites).
    """
    for m in _FILE_IN_ERROR.finditer(output):
        path = Path(m.group(1))
        if path.name.startswith(OWNED_PREFIX):
            return path.name, False
        owner = site_filename(path.parent.name)
        if f"include {path.parent}/*.conf;" in target.get(owner, ""):
            return owner, True
    return None, False


def first_error_line(output: str) -> str:
    for line in output.splitlines():
        if "[emerg]" in line or "[alert]" in line or "[crit]" in line or "[error]" in line:
            return line.split("] ", 1)[-1].strip()[:300]
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
) -> ApplyResult:
    """Make the owned files in ``conf_dir`` equal ``wanted``; test; reload.

    ``verify(written)`` runs after the reload and returns "" when nginx really serves
    what was written (for example the new certificate over TLS with SNI); anything
    else puts the previous files back, reloads them and raises ``NginxError``.
    """
    before = owned_files(conf_dir)
    result = ApplyResult()
    target = dict(wanted)
    if target == before:
        return result
    conf_dir.mkdir(parents=True, exist_ok=True)

    def put(files: Mapping[str, str]) -> None:
        current = owned_files(conf_dir)
        for name, content in files.items():
            if current.get(name) != content:
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
    for _ in range(max_isolations + 1):
        ok, output = control.test()
        if ok:
            break
        culprit, via_snippet = _culprit(output, target)
        reason = first_error_line(output)
        if culprit is None or culprit == GLOBAL_FILE:
            # Not one site's file: put everything back as it was.
            raise restore("nginx -t failed", reason, output)
        # Hold back this one site's file: its previous version if this pass changed it,
        # else leave it out altogether (an unchanged file that fails now, e.g. an upstream
        # name that no longer resolves, must not block every other site's updates).
        result.rejected[culprit] = reason
        if on_reject is not None:
            on_reject(culprit, reason)
        if culprit in before and before[culprit] != target.get(culprit) and not via_snippet:
            target[culprit] = before[culprit]
        else:
            target.pop(culprit, None)
        try:
            put(target)
        except OSError as exc:
            raise restore("cannot write the nginx config", str(exc)) from exc
    else:
        raise restore("nginx -t kept failing", output=output)

    after = owned_files(conf_dir)
    result.written = sorted(n for n in after if before.get(n) != after[n])
    result.removed = sorted(n for n in before if n not in after)
    result.changed = bool(result.written or result.removed)
    if not result.changed:
        return result
    ok, output = control.reload()
    if not ok:
        raise restore("nginx -s reload failed", first_error_line(output), output, reload=True)
    result.reloaded = True
    if verify is not None:
        problem = verify(result.written)
        if problem:
            raise restore(f"after the reload nginx did not serve what was written ({problem})", reload=True)
    return result


class DockerNginx:
    """``nginx -t`` / ``nginx -s reload`` / ``nginx -V`` in the nginx container, through ``docker exec``."""

    def __init__(self, docker: Docker, container_id: str) -> None:
        self.docker = docker
        self.container_id = container_id

    def test(self) -> tuple[bool, str]:
        r = self.docker.exec(self.container_id, ["nginx", "-t"])
        return r.exit_code == 0, r.output

    def reload(self) -> tuple[bool, str]:
        r = self.docker.exec(self.container_id, ["nginx", "-s", "reload"])
        return r.exit_code == 0, r.output

    def traits(self) -> tuple[NginxTraits, str]:
        """What the rendered config may use (version, IPv6, post-quantum groups), and ``nginx -V``'s first line."""
        version = self.docker.exec(self.container_id, ["nginx", "-V"]).output
        v6 = self.docker.exec(self.container_id, ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"])
        return traits_from(version, v6.output if v6.exit_code == 0 else ""), (version.splitlines() or ["?"])[0].strip()
