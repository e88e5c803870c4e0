"""The output of the last few certbot runs per site, kept in the state volume.

    STATE_DIR/certbot-logs/<site>/<UTC timestamp>-<exit code>.log

certbot runs in throw-away containers, so its output would be gone with them;
``status`` shows the newest file of each site and its most telling line.
Written atomically; only the newest ``KEEP`` files per site stay. Never raises:
losing a log must not stop a certificate.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sidecar.core.redact import redact
from sidecar.state.files import atomic_write

log = logging.getLogger(__name__)

KEEP = 5
DIRNAME = "certbot-logs"
_NAME = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-(\d+|timeout)\.log$")
# certbot's closing boilerplate: never the line that explains what happened.
_BOILERPLATE = (
    "Ask for help", "See the logfile", "If you like Certbot", "* Donating", "* Donate", "Donating to",
    "- - - -", "NEXT STEPS", "Saving debug log", "We were unable to subscribe",
    "- The certificate will need to be renewed", "These files will be updated when",
)


@dataclass(frozen=True)
class RunLog:
    path: Path
    at: datetime
    exit_code: int | None  # None: timed out
    last_line: str


def site_dir(state_dir: Path, site: str) -> Path | None:
    """The directory of one site's logs; None for a name that is not a safe path component."""
    if not site or site.startswith(".") or "/" in site or "\\" in site or "\0" in site:
        return None
    return state_dir / DIRNAME / site


def last_line(output: str) -> str:
    """The last line that says something (skips certbot's closing boilerplate)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    return (useful or lines or [""])[-1][:300]


def keep(state_dir: Path, site: str, exit_code: int | None, output: str, now: datetime) -> Path | None:
    """Store one run's output and prune the site's older logs down to ``KEEP``."""
    directory = site_dir(state_dir, site)
    if directory is None:
        return None
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = directory / f"{stamp}-{'timeout' if exit_code is None else exit_code}.log"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, redact(output))  # (certbot echoes its command line in some errors)
        for old in _logs(directory)[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("site %s: cannot keep the certbot output in %s: %s", site, directory, exc)
        return None
    return path


def _logs(directory: Path) -> list[Path]:
    """A site's log files, oldest first (the names sort by time)."""
    try:
        return sorted(p for p in directory.iterdir() if _NAME.match(p.name))
    except OSError:
        return []


def latest(state_dir: Path, site: str) -> RunLog | None:
    directory = site_dir(state_dir, site)
    if directory is None:
        return None
    for path in reversed(_logs(directory)):
        match = _NAME.match(path.name)
        assert match is not None
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        at = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
        code = None if match.group(2) == "timeout" else int(match.group(2))
        return RunLog(path, at, code, last_line(text))
    return None
