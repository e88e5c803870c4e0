"""A hand-written conf.d file nginx rejects is set aside, so it cannot hold every other site hostage.

While a file in conf.d fails ``nginx -t``, no reload can succeed: a new site's certificate
would be issued and never served, a renewed one never loaded. With ``BROKEN_CONF=set-aside``
(the default) the file is renamed ``NAME.sidecar-broken`` (its bytes untouched, never edited),
nginx goes on with the rest, and the sidecar says so loudly: an event and an alert at once,
``/healthz`` degraded with the reason, ``/status`` and a metric naming the file. It is tried
again as soon as the user fixes it: a new ``NAME`` is tested like any change, and an edit of
the set-aside copy renames it back to be tested. ``BROKEN_CONF=keep`` leaves it in place
(nothing reaches nginx until it is fixed).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from datetime import datetime, timezone
from pathlib import Path

from sidecar.adapters.nginx import first_error_line
from sidecar.core.events import Kind
from sidecar.core.names import OWNED_PREFIX
from sidecar.engine.reporter import Reporter
from sidecar.state.files import fsync_dir

log = logging.getLogger("sidecar")

ASIDE_SUFFIX = ".sidecar-broken"
NGINX_CONF_D = "/etc/nginx/conf.d"  # where nginx sees the conf volume (its error messages name it)
_IN_FILE = re.compile(r" in (/[^\s:]+):(\d+)")


class BrokenConfs:
    def __init__(self, conf_dir: Path, enabled: bool, reporter: Reporter) -> None:
        self.conf_dir = conf_dir
        self.enabled = enabled
        self.reporter = reporter
        self.aside: dict[str, tuple[str, str, int]] = {}  # file -> (nginx's error, aside name, its mtime)

    def set_aside(self, output: str) -> str | None:
        """When nginx's error is in a hand-written top-level conf.d file, rename it out of nginx's way."""
        if not self.enabled:
            return None
        for match in _IN_FILE.finditer(output):
            directory, name = posixpath.split(match.group(1))
            local = self.conf_dir / name
            if directory != NGINX_CONF_D or not name.endswith(".conf") or name.startswith(OWNED_PREFIX) \
                    or not local.is_file():
                continue
            aside = self.conf_dir / (name + ASIDE_SUFFIX)
            if aside.exists():  # an older broken copy stays too
                aside = self.conf_dir / f"{name}{ASIDE_SUFFIX}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
            try:
                os.rename(local, aside)
                fsync_dir(self.conf_dir)
                mtime = aside.stat().st_mtime_ns
            except OSError as exc:
                log.error("cannot set %s aside: %s", local, exc)
                return None
            error = first_error_line(output)
            self.aside[name] = (error, aside.name, mtime)
            log.error("nginx rejects the hand-written %s/%s (%s); set aside as %s so every other site keeps "
                      "being updated: fix it and rename it back (or edit %s: it is tried again when it changes)",
                      NGINX_CONF_D, name, error, aside.name, aside.name)
            self.reporter.emit(Kind.CONF_SET_ASIDE, "", error, file=name, aside=aside.name, error=error)
            return name
        return None

    def review(self) -> None:
        """Take back what the user fixed: a new file under the old name, or an edited set-aside copy."""
        for name, (error, aside_name, mtime) in list(self.aside.items()):
            local, aside = self.conf_dir / name, self.conf_dir / aside_name
            try:
                if local.exists():
                    log.info("%s/%s is back; nginx tests it with the rest", NGINX_CONF_D, name)
                elif not aside.exists():
                    log.info("%s is gone; %s stays out", aside_name, name)
                elif aside.stat().st_mtime_ns != mtime:
                    os.rename(aside, local)
                    log.info("%s was edited: renamed back to %s to be tested again", aside_name, name)
                else:
                    continue
            except OSError as exc:
                log.warning("cannot take %s back: %s", aside_name, exc)
                continue
            del self.aside[name]

    def degraded(self) -> tuple[str, ...]:
        return tuple(f"hand-written {NGINX_CONF_D}/{name} is rejected by nginx ({error}) and set aside as "
                     f"{aside}: fix it and rename it back" for name, (error, aside, _) in sorted(self.aside.items()))

    def files(self) -> dict[str, str]:
        return {name: error for name, (error, _, _) in self.aside.items()}
