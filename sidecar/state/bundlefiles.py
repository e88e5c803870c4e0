"""The files of a bundle on disk (Docker Swarm): collected by the issuer, written by each agent.

What travels: everything certbot keeps in CERTS_DIR (accounts, archive, live links, renewal
configuration), the ledger (``STATE_DIR/ledger.json``; STATE_DIR lies inside CERTS_DIR for the issuer),
and the ``sidecar*`` files of NGINX_CONF_DIR (the rendered sites, the global file, the include snippets).
Not: certbot's scratch directories, temporary files, run logs, the status file.
"""

from __future__ import annotations

import os
from pathlib import Path

from sidecar.core.bundle import File
from sidecar.core.names import TEMP_PREFIX
from sidecar.state import files

SKIP_TOP = (".staging", "keys", "csr")
STATE_FILES = ("ledger.json",)


def _regular(root: Path, area: str, path: Path) -> File | None:
    rel = path.relative_to(root).as_posix()
    if path.is_symlink():
        return File(area, rel, link=os.readlink(path))
    if not path.is_file() or path.name.startswith(TEMP_PREFIX):
        return None
    return File(area, rel, path.read_bytes(), path.stat().st_mode & 0o777)


def collect(certs_dir: Path, conf_dir: Path, state_dir: Path) -> tuple[File, ...]:
    out: list[File] = []
    state_rel = state_dir.relative_to(certs_dir).parts[0] if state_dir.is_relative_to(certs_dir) else None
    if certs_dir.is_dir():
        for top in sorted(certs_dir.iterdir()):
            if top.name in SKIP_TOP or top.name == state_rel or top.name.startswith("."):
                continue
            for path in sorted([top, *top.rglob("*")] if top.is_dir() else [top]):
                if path.is_dir() and not path.is_symlink():
                    continue
                f = _regular(certs_dir, "certs", path)
                if f is not None:
                    out.append(f)
        for name in STATE_FILES:
            if state_rel and (state_dir / name).is_file():
                f = _regular(certs_dir, "certs", state_dir / name)
                if f is not None:
                    out.append(f)
    if conf_dir.is_dir():
        for path in sorted(conf_dir.rglob("sidecar*")):
            if path.is_dir():
                for inner in sorted(path.rglob("*")):
                    if not inner.is_dir() and (f := _regular(conf_dir, "conf", inner)) is not None:
                        out.append(f)
            elif path.relative_to(conf_dir).parts[0].startswith("sidecar") and path.suffix == ".conf":
                if (f := _regular(conf_dir, "conf", path)) is not None:
                    out.append(f)
    return tuple(dict.fromkeys(out))


def _same(path: Path, f: File) -> bool:
    if f.link is not None:
        return path.is_symlink() and os.readlink(path) == f.link
    return path.is_file() and not path.is_symlink() and path.read_bytes() == f.data


def write(bundle_files: tuple[File, ...], roots: dict[str, Path]) -> list[str]:
    """Write the files that differ, each atomically (links: a new link renamed over the old one);
    certificates before configuration, so nginx never reads a file naming a missing one.
    Returns the paths written."""
    written = []
    for f in sorted(bundle_files, key=lambda f: (f.area != "certs", f.link is not None, f.path)):
        path = roots[f.area] / f.path
        if _same(path, f):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.link is not None:
            tmp = path.with_name(f".{path.name}.tmp-link")
            tmp.unlink(missing_ok=True)
            os.symlink(f.link, tmp)
            os.replace(tmp, path)
        else:
            files.atomic_write(path, f.data, f.mode)
        written.append(f"{f.area}:{f.path}")
    return written


def conf_files(conf_dir: Path) -> dict[str, bytes]:
    """The sidecar's own top-level conf files (what nginx loads), to restore after a rejection."""
    return {p.name: p.read_bytes() for p in sorted(conf_dir.glob("sidecar*.conf")) if p.is_file()}


def replace_conf(conf_dir: Path, wanted: dict[str, bytes]) -> None:
    """Make the top-level ``sidecar*.conf`` files exactly ``wanted``."""
    for name, data in wanted.items():
        path = conf_dir / name
        if not (path.is_file() and path.read_bytes() == data):
            files.atomic_write(path, data)
    for path in conf_dir.glob("sidecar*.conf"):
        if path.name not in wanted:
            path.unlink(missing_ok=True)


def read_key(path: Path) -> bytes:
    """The shared secret (a Swarm secret file), registered for redaction; ConfigError when unusable."""
    from sidecar.core import bundle as bundle_mod, redact
    from sidecar.core.errors import ConfigError

    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"BUNDLE_KEY_FILE={path}: cannot read it ({exc.strerror}); create a Swarm secret "
                          "and mount it there") from exc
    try:
        key = bundle_mod.derive_key(secret)
    except ValueError as exc:
        raise ConfigError(f"BUNDLE_KEY_FILE={path}: {exc}") from exc
    redact.register(secret.strip().decode("utf-8", "replace"))
    return key
