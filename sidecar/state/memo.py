"""A parse result kept in the state volume across restarts, for input that is slow to parse.

Ten thousand sites-file entries take a second to parse and validate (most of it PyYAML building
Python objects); their result, pickled, loads in a fifth of that. The key covers the input,
the settings it was parsed with and the sidecar's own code (every module's source), so a new
version, or a changed default, parses again. A pickle runs code when loaded, like the ``.pyc``
files Python caches: it is read only from a file this process's user owns and nobody else may
write, in the sidecar's own state volume. Anything wrong with it (missing, another key, damaged)
means parsing as if there were none.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import stat
from pathlib import Path
from typing import Any

from sidecar.state.files import atomic_write

log = logging.getLogger("sidecar")

_PACKAGE = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the sidecar package's Python sources (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def key(*parts: str) -> str:
    digest = hashlib.sha256(code_digest().encode())
    for part in parts:
        digest.update(b"\0" + part.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def load(path: Path, wanted: str) -> Any | None:
    """The value saved under ``wanted``, or None."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("%s is not this user's own file: not used", path)
                return None
            if fh.readline().rstrip(b"\n").decode("ascii", "replace") != wanted:
                return None
            return pickle.load(fh)  # noqa: S301 - our own file, see the module's docstring
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged cache is only a slower start
        log.debug("%s: not used (%s)", path, type(exc).__name__)
        return None


def save(path: Path, saved_key: str, value: Any) -> None:
    try:
        atomic_write(path, saved_key.encode("ascii") + b"\n" + pickle.dumps(value, pickle.HIGHEST_PROTOCOL), 0o600)
    except (OSError, pickle.PicklingError) as exc:
        log.warning("cannot keep %s: %s", path, exc)


def forget(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
