"""DNS-01 credentials files: the pre-flight of a DNS-01 site, and their values kept out of every output.

The files belong to certbot: the sidecar mounts their directory read-only into the certbot
container and reads a file only to check it (there, a regular file, no access for group or
others) and to register its values with ``redact``, so that nothing the sidecar says (logs,
status, events, ledger, alerts, kept certbot output) can ever show them. It never logs a file.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sidecar.core import dns, redact

log = logging.getLogger("sidecar")

MAX_BYTES = 64 * 1024


def register_file(path: Path) -> None:
    """Register the secret values of one credentials file (unreadable: nothing to register)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return
    for value in dns.secret_values(text, json_file=path.suffix == ".json"):
        redact.register(value)


def register_all(directory: Path) -> int:
    """At start: every credentials file already in ``directory`` (so even a value pasted by mistake
    into a label is redacted before any site uses the file). Returns how many files were read."""
    count = 0
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return 0
    for path in entries:
        if path.suffix in (".ini", ".json") and path.is_file():
            register_file(path)
            count += 1
    return count


def check(directory: Path, challenge: dns.DnsChallenge) -> str:
    """The pre-flight of a DNS-01 site: "" when its credentials file is usable, else one line saying
    what is wrong with which file (the CA is not asked then). Registers the file's values."""
    path = Path(challenge.credentials(str(directory)))
    how = (f"mount it into the sidecar read-only (DNS_CREDENTIALS_DIR={directory}; the sidecar passes it on "
           "to the certbot container)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"DNS-01 via {challenge.spec}: credentials file {path} not found: {how}"
    except OSError as exc:
        return f"DNS-01 via {challenge.spec}: credentials file {path} cannot be read ({exc.strerror}): {how}"
    if not stat.S_ISREG(st.st_mode):
        return f"DNS-01 via {challenge.spec}: credentials file {path} is not a regular file"
    register_file(path)
    if dns.unsafe_mode(st.st_mode):
        return (f"DNS-01 via {challenge.spec}: credentials file {path} is not private (mode "
                f"{stat.S_IMODE(st.st_mode):04o}: group or others may read it); chmod 600 it")
    if not os.access(path, os.R_OK):
        return f"DNS-01 via {challenge.spec}: credentials file {path} cannot be read by the sidecar"
    return ""
