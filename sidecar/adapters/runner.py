"""Where certbot runs: in a sibling container, never in the sidecar.

``ExecRunner`` (the default, ``CERTBOT_RUNNER=exec``) keeps one confined certbot container
idling and starts each certbot run in it with ``docker exec``: about 0.06 s instead of
about 0.25 s for creating a container per run, and less CPU. Every run gets its own
scratch directories (so parallel runs never share certbot's locks) and is stopped after
``CERTBOT_TIMEOUT`` seconds. If the container disappears it is started again.

With ``CERTBOT_LAUNCHER=on`` (the default) that container's main process also starts certbot's
launcher (``launcher.py``, passed in the container's command): certbot's Python is started and
certbot imported once per container, and each run's ``docker exec`` starts a small client that
hands its stdio, arguments and environment to the launcher, which forks certbot's run from the
imported copy (about 0.02 CPU-seconds instead of about 0.2 for starting certbot). If the launcher
is not (yet) listening, crashed or hangs, the run is a plain ``certbot`` exec as before, and the
sidecar logs why.

``ContainerRunner`` (``CERTBOT_RUNNER=container``) starts one container per run, as the
classic scripts do.

``Images`` holds one runner per certbot image when a DNS provider's plugin runs from an image
of its own (``CERTBOT_IMAGE_<PROVIDER>``); each is made on its first run.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from sidecar.adapters import launcher, launcher_client
from sidecar.adapters.docker_api import Docker, RunResult
from sidecar.core.errors import ConfigError, DockerUnavailable

log = logging.getLogger(__name__)

# Keeps the idle container alive and lets it stop at once on SIGTERM (a shell as PID 1 ignores it otherwise).
IDLE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
# Where the launcher lives in the certbot container (its private tmpfs): launcher.py, client.py,
# the interpreter's path (python), the socket (sock, once certbot is imported) and, after a crash, down.
LAUNCHER_DIR = "/tmp/certbot-launcher"
# The certbot container's main process with the launcher: writes launcher.py ($1) and client.py ($2), finds the
# interpreter certbot's own script names (its #! line), and keeps a launcher running beside the
# idle loop (restarted 30 s after it exits, at most 5 times); then idles as IDLE_SCRIPT.
LAUNCHER_BOOT = (
    "trap 'exit 0' TERM INT; L=" + LAUNCHER_DIR + "; "
    'if mkdir -p "$L" && printf "%s\\n" "$1" > "$L/launcher.py" && printf "%s\\n" "$2" > "$L/client.py" && '
    'c=$(command -v certbot) && '
    'read -r first < "$c"; then '
    '  set -- ${first#"#!"}; [ "${1##*/}" = env ] && shift; py=$(command -v "$1"); '
    '  case "${py##*/}" in python*) printf "%s\\n" "$py" > "$L/python"; '
    '    ( n=0; while [ $n -lt 5 ]; do "$py" "$L/launcher.py" serve "$L" "$c"; '
    '      echo "exited with $?" > "$L/down"; rm -f "$L/sock"; n=$((n+1)); sleep 30; rm -f "$L/down"; done; '
    '      echo "exited 5 times, not restarted" > "$L/down" ) & ;; '
    '  *) echo "launcher: certbot is not a Python script; certbot runs directly" >&2;; esac; '
    "fi; while :; do sleep 3600 & wait $!; done"
)
# One run: private scratch space, removed afterwards; stopped (TERM) when the time is up. Through
# the launcher when it listens (its client leaves $d/fallback if certbot did not start: then, or
# when the launcher is down, a plain certbot, after one line the runner reports).
RUN_SCRIPT = (
    'd="$1"; t="$2"; shift 2; mkdir -p "$d/work" "$d/logs"; trap \'rm -rf "$d"\' EXIT; L=' + LAUNCHER_DIR + '; '
    'if [ -S "$L/sock" ] && read -r py < "$L/python"; then '
    'timeout "$t" "$py" -I -S "$L/client.py" "$L/sock" "$d/fallback" '
    '--work-dir "$d/work" --logs-dir "$d/logs" "$@"; rc=$?; [ -e "$d/fallback" ] || exit $rc; '
    'elif [ -e "$L/down" ]; then echo "' + launcher.MARKER + ' $(cat "$L/down"); running certbot directly" >&2; fi; '
    'timeout "$t" certbot --work-dir "$d/work" --logs-dir "$d/logs" "$@"'
)
# coreutils' timeout exits 124 when it stopped the command; busybox's (Alpine images) 143 (SIGTERM).
TIMEOUT_CODES = frozenset({124, 137, 143})


_LAUNCHER_SOURCE: list[str] = []


def launcher_source() -> list[str]:
    """The text of launcher.py and launcher_client.py, passed to the certbot container in its command."""
    if not _LAUNCHER_SOURCE:
        _LAUNCHER_SOURCE.extend(Path(m.__file__ or "").read_text(encoding="utf-8")
                                for m in (launcher, launcher_client))
    return _LAUNCHER_SOURCE


class Runner(Protocol):
    def run(self, args: list[str], environment: Mapping[str, str], site: str) -> RunResult: ...

    def warm(self) -> None:
        """Get ready for the first run (before anyone waits for it)."""

    def close(self) -> None: ...


@dataclass
class Sandbox:
    """What every certbot container gets: the image, the two shared volumes, the network, labels."""
    image: str
    volumes: Mapping[str, Mapping[str, str]]
    network_mode: str | None
    labels: Mapping[str, str]
    timeout: float


class ContainerRunner:
    """One fresh container per certbot run."""

    def __init__(self, docker: Docker, sandbox: Sandbox) -> None:
        self.docker = docker
        self.sandbox = sandbox

    def run(self, args: list[str], environment: Mapping[str, str], site: str) -> RunResult:
        sb = self.sandbox
        return self.docker.run_once(
            sb.image, args, volumes=sb.volumes, environment=environment, network_mode=sb.network_mode,
            labels={**sb.labels, "nginx-acme-sidecar.site": site}, timeout=sb.timeout,
        )

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass


class ExecRunner:
    """certbot runs as ``docker exec`` processes in one long-lived, confined certbot container."""

    def __init__(self, docker: Docker, sandbox: Sandbox, name: str, parallel: int, launcher: bool = True) -> None:
        self.docker = docker
        self.sandbox = sandbox
        self.name = name
        self.parallel = parallel
        self.launcher = launcher
        self._lock = threading.Lock()
        self._id: str | None = None
        self._reported: set[str] = set()

    def _command(self) -> list[str]:
        if not self.launcher:
            return ["-c", IDLE_SCRIPT]
        return ["-c", LAUNCHER_BOOT, "certbot-launcher", *launcher_source()]

    def _container(self, fresh: bool = False) -> str:
        with self._lock:
            if self._id is not None and (fresh and not self.docker.is_running(self._id)):
                self._id = None
            if self._id is None:
                sb = self.sandbox
                try:
                    self._id = self.docker.start_detached(
                        sb.image, self._command(), entrypoint=["sh"], volumes=sb.volumes,
                        network_mode=sb.network_mode, labels=sb.labels, name=self.name, runs=self.parallel,
                    )
                except DockerUnavailable as exc:
                    if "executable file not found" in str(exc) or "no such file or directory" in str(exc).lower():
                        raise ConfigError(f"CERTBOT_IMAGE={sb.image}: it has no sh, which CERTBOT_RUNNER=exec "
                                          "needs (with sleep and timeout); set CERTBOT_RUNNER=container") from exc
                    raise
                log.info("certbot container %s started (%s); certificate runs are exec'd in it%s", self.name,
                         sb.image, ", through certbot's launcher" if self.launcher else "")
            return self._id

    def warm(self) -> None:
        self._container()

    def run(self, args: list[str], environment: Mapping[str, str], site: str) -> RunResult:
        limit = self.sandbox.timeout
        cmd = ["sh", "-c", RUN_SCRIPT, "certbot-run", f"/tmp/run-{secrets.token_hex(6)}", str(int(limit)), *args]
        for attempt in range(2):
            container = self._container(fresh=attempt > 0)
            started = time.monotonic()
            try:
                result = self.docker.exec(container, cmd, environment=environment, timeout=limit + 30)
            except DockerUnavailable:
                # The container was removed or stopped under us: start a new one, once.
                if attempt == 0 and not self.docker.is_running(container):
                    log.warning("certbot container %s is gone; starting a new one", self.name)
                    continue
                raise
            output = self._launcher_notes(result.output)
            if result.exit_code in TIMEOUT_CODES and time.monotonic() - started >= limit - 1:
                return RunResult(None, output)
            return RunResult(result.exit_code, output)
        raise DockerUnavailable(f"certbot container {self.name} keeps disappearing")

    def _launcher_notes(self, output: str) -> str:
        """Take the launcher's notes (it was down, or could not start this run, so certbot ran
        directly) out of certbot's output, and log them: a warning the first time for each reason."""
        if launcher.MARKER not in output:
            return output
        kept = []
        for line in output.splitlines(keepends=True):
            if not line.startswith(launcher.MARKER):
                kept.append(line)
                continue
            note = line[len(launcher.MARKER):].strip()
            reason = note.split("(", 1)[0].strip()
            first = reason not in self._reported
            self._reported.add(reason)
            log.log(logging.WARNING if first else logging.DEBUG, "certbot launcher in %s: %s", self.name, note)
        return "".join(kept)

    def close(self) -> None:
        with self._lock:
            if self._id is not None:
                self.docker.remove(self._id)
                self._id = None


class Images:
    """The default image's runner, and one more per other image, made (and pulled) when first needed."""

    def __init__(self, default: Runner, default_image: str, make: Callable[[str, int], Runner]) -> None:
        self.default = default
        self.default_image = default_image
        self._make = make  # (image, its number from 2 on) -> a runner for it
        self._lock = threading.Lock()
        self._others: dict[str, Runner] = {}

    def for_image(self, image: str) -> Runner:
        if image == self.default_image:
            return self.default
        with self._lock:
            if image not in self._others:
                self._others[image] = self._make(image, len(self._others) + 2)
            return self._others[image]

    def run(self, args: list[str], environment: Mapping[str, str], site: str) -> RunResult:
        return self.default.run(args, environment, site)

    def warm(self) -> None:
        self.default.warm()

    def close(self) -> None:
        with self._lock:
            others, self._others = list(self._others.values()), {}
        for run in [self.default, *others]:
            run.close()
