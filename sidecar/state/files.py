"""Atomic file writes: readers see the old file or the new one, never half of one.

Every file the sidecar writes (nginx config, ledger, status, run logs, copies) goes
through :func:`atomic_write`: a temporary file next to the target, fsync, rename,
fsync of the directory. A process killed in between leaves only a ``TEMP_PREFIX``
file, which :func:`remove_temp_files` deletes at the next start.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sidecar.core.names import TEMP_PREFIX

# This process's temporary files start with this (another process's, or a killed one's, do not),
# so the clean-up of a large volume can run while this process already writes.
OWN_TEMP_PREFIX = f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}."


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` so readers see the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=OWN_TEMP_PREFIX, dir=path.parent)
    try:
        if isinstance(content, bytes):
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_many(directory: Path, contents: dict[str, str], mode: int = 0o644) -> None:
    """``atomic_write`` for many files of one directory at once: each is written to a temporary
    file, the files are synced side by side (one after the other, ten thousand files and a
    directory sync each took 20 s; ``os.sync()`` waits for every other writer of the host), then
    renamed into place, and the directory synced once. Readers still see each file old or new,
    never half of one."""
    temps: list[tuple[str, Path]] = []

    def fsync(path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    try:
        for name, content in contents.items():
            fd, tmp = tempfile.mkstemp(prefix=OWN_TEMP_PREFIX, dir=directory)
            temps.append((tmp, directory / name))
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                fh.write(content)
            os.chmod(tmp, mode)
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync") as pool:
            for _ in pool.map(fsync, [tmp for tmp, _ in temps]):
                pass
        while temps:
            tmp, path = temps[-1]
            os.replace(tmp, path)
            temps.pop()
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    fsync_dir(directory)


def remove_temp_files(roots: list[Path]) -> list[str]:
    """Delete what a process killed inside ``atomic_write`` leaves (``.sidecar-tmp-*``, never
    read by anyone) under ``roots``, except this process's own (being written now: the walk of a
    volume of ten thousand certificates takes most of a second, and may run in the background
    while this process writes). Returns the paths."""
    removed: list[str] = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                if name.startswith(TEMP_PREFIX) and not name.startswith(OWN_TEMP_PREFIX):
                    path = os.path.join(dirpath, name)
                    try:
                        os.unlink(path)
                        removed.append(path)
                    except OSError:
                        pass
    return removed
