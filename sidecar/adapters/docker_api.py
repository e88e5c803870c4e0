"""The only module that imports ``docker``. Translates SDK objects into ``model`` types
and SDK exceptions into ``errors`` at once.

Honours ``DOCKER_HOST`` (and the other ``DOCKER_*`` variables) through
``docker.from_env``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import docker
import docker.errors
import requests.exceptions

from sidecar.core.errors import ConfigError, DockerUnavailable
from sidecar.core.model import ContainerInfo, SwarmNode, SwarmService, SwarmTask
from sidecar.core.redact import redact

log = logging.getLogger(__name__)

_CONTAINER_ID = re.compile(r"/(?:docker/)?containers/([0-9a-f]{64})/")
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None: timed out and killed
    output: str


def _sandbox(runs: int) -> dict[str, Any]:
    """The confinement of every container the sidecar starts, sized for ``runs`` certbots at once:
    read-only root, scratch space in tmpfs, no capabilities beyond file ownership, bounded memory and pids."""
    return {
        "tmpfs": {"/var/lib/letsencrypt": "", "/var/log/letsencrypt": "", "/tmp": ""},
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "mem_limit": f"{128 + 128 * runs}m",
        "pids_limit": 64 + 64 * runs,
    }


_SHELLS = frozenset({"sh", "bash", "ash", "dash"})
_PLAIN_WORD = re.compile(r"[a-z][a-z-]{0,30}")
_SHORT_FLAG = re.compile(r"-[A-Za-z]")


def command_name(cmd: list[str]) -> str:
    """Which command ``cmd`` is, for error messages, never its arguments (certbot's hold the EAB key):
    the program and its leading plain words and one-letter flags (``nginx -s reload``); for a shell
    script (``sh -c SCRIPT NAME ARGS...``) its name and the first plain word of its arguments
    (``certbot-run certonly``)."""
    if not cmd:
        return "(nothing)"
    program = cmd[0].rsplit("/", 1)[-1]
    if program in _SHELLS and len(cmd) > 2 and cmd[1] == "-c":
        name = cmd[3].rsplit("/", 1)[-1] if len(cmd) > 3 else f"{program} -c"
        sub = next((a for a in cmd[4:] if _PLAIN_WORD.fullmatch(a)), None)
        return f"{name} {sub}" if sub else name
    words = [program]
    for arg in cmd[1:4]:
        if not (_PLAIN_WORD.fullmatch(arg) or _SHORT_FLAG.fullmatch(arg)):
            break
        words.append(arg)
    return " ".join(words)


@contextlib.contextmanager
def _translated(what: str, *, image: str | None = None, container: str | None = None) -> Iterator[None]:
    """SDK and transport errors inside the block as ``DockerUnavailable`` ("<what> failed: ...");
    a missing ``image`` as ``ConfigError``, a vanished ``container`` as gone. The SDK's text
    passes through ``redact`` (an engine error may quote a command line)."""
    try:
        yield
    except docker.errors.APIError as exc:
        if image is not None and isinstance(exc, docker.errors.ImageNotFound):
            raise ConfigError(f"image {image} not found") from exc
        if container is not None and isinstance(exc, docker.errors.NotFound):
            raise DockerUnavailable(f"container {container[:12]} is gone: {redact(str(exc))}") from exc
        raise DockerUnavailable(f"{what} failed: {redact(str(exc.explanation or exc))}") from exc
    except _DOCKER_ERRORS as exc:
        raise DockerUnavailable(f"{what} failed: {redact(str(exc))}") from exc


def _info(raw: Mapping[str, Any]) -> ContainerInfo:
    """From one entry of ``GET /containers/json`` (one call lists everything)."""
    name = (raw.get("Names") or ["/" + raw["Id"][:12]])[0].lstrip("/")
    nets = ((raw.get("NetworkSettings") or {}).get("Networks") or {})
    ports = sorted({p["PrivatePort"] for p in raw.get("Ports") or [] if p.get("Type", "tcp") == "tcp"})
    return ContainerInfo(
        id=raw["Id"],
        name=name,
        labels=dict(raw.get("Labels") or {}),
        networks={n: (v or {}).get("IPAddress", "") for n, v in nets.items()},
        exposed_ports=tuple(ports),
        created=f"{int(raw.get('Created') or 0):012d}",
        running=raw.get("State") == "running",
    )


class Docker:
    """A thin, typed facade over the Docker API."""

    def __init__(self, timeout: float = 30.0) -> None:
        try:
            self._client = docker.from_env(timeout=int(timeout))
            self._client.ping()
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"cannot reach the Docker API ({os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'}): {exc}") from exc
        self._events_lock = threading.Lock()
        self._events: Any = None
        self._slow: Any = None
        self._slow_timeout = 0.0
        self._slow_lock = threading.Lock()
        self._main_pids: dict[str, int] = {}  # container id -> its main process's host PID (see children)

    # -- reading ---------------------------------------------------------------
    def list_containers(self) -> list[ContainerInfo]:
        try:
            return [_info(c) for c in self._client.api.containers()]
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"listing containers failed: {exc}") from exc

    def find_container(self, name_or_id: str) -> ContainerInfo | None:
        try:
            raw = self._client.api.containers(filters={"id": name_or_id}) or [
                c for c in self._client.api.containers(filters={"name": name_or_id})
                if name_or_id in [n.lstrip("/") for n in c.get("Names") or []]
            ]
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"looking up container {name_or_id} failed: {exc}") from exc
        return _info(raw[0]) if raw else None

    def find_by_label(self, label: str) -> list[ContainerInfo]:
        try:
            return [_info(c) for c in self._client.api.containers(filters={"label": label})]
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"listing containers by label failed: {exc}") from exc

    def container_env(self, container_id: str) -> dict[str, str]:
        """A container's environment (``Config.Env`` of one inspect; not in the listing); {} once it is gone."""
        try:
            raw = self._client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return {}
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"inspecting container {container_id[:12]} failed: {exc}") from exc
        pairs = (str(item).partition("=") for item in (raw.get("Config") or {}).get("Env") or [])
        return {key: value for key, sep, value in pairs if sep}

    def own_container_id(self, configured: str | None) -> str | None:
        """This process's container: from settings, /proc/self/mountinfo, or HOSTNAME."""
        if configured:
            found = self.find_container(configured)
            if found is None:
                raise ConfigError(f"SIDECAR_CONTAINER={configured!r}: no such running container")
            return found.id
        try:
            with open("/proc/self/mountinfo", encoding="utf-8") as fh:
                match = _CONTAINER_ID.search(fh.read())
            if match and self.find_container(match.group(1)):
                return match.group(1)
        except OSError:
            pass
        host = os.environ.get("HOSTNAME", "")
        if re.fullmatch(r"[0-9a-f]{12,64}", host):
            found = self.find_container(host)
            if found is not None:
                return found.id
        return None

    def _mounts(self, container_id: str) -> list[dict[str, Any]]:
        """The container's mounts, each with ``source``: a volume's name or a bind mount's host path."""
        try:
            mounts = self._client.api.inspect_container(container_id).get("Mounts") or []
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"inspecting container {container_id[:12]} failed: {exc}") from exc
        return [{**m, "source": m.get("Name") if m.get("Type") == "volume" else m.get("Source")} for m in mounts]

    def mounts_for(self, container_id: str, destinations: list[str]) -> dict[str, dict[str, str]]:
        """Volume binds (as ``containers.run(volumes=...)`` wants) for the given mount points."""
        mounts = self._mounts(container_id)
        binds: dict[str, dict[str, str]] = {}
        for dest in destinations:
            mount = next((m for m in mounts if m.get("Destination") == dest), None)
            if mount is None:
                raise ConfigError(
                    f"the sidecar container has no volume mounted at {dest}; mount the shared volume there"
                )
            binds[mount["source"]] = {"bind": dest, "mode": "rw"}
        return binds

    def mounts_under(self, container_id: str, directory: str) -> dict[str, dict[str, str]]:
        """Read-only volume binds for the container's mounts at ``directory`` and directly inside it
        (a Docker secret is a file mounted there); {} when there are none."""
        binds: dict[str, dict[str, str]] = {}
        for mount in self._mounts(container_id):
            dest = str(mount.get("Destination") or "")
            if dest == directory or dest.rsplit("/", 1)[0] == directory:
                source = mount["source"]
                if source:
                    binds[str(source)] = {"bind": dest, "mode": "ro"}
        return binds

    # -- exec ------------------------------------------------------------------
    def exec(self, container_id: str, cmd: list[str], *, environment: Mapping[str, str] | None = None,
             timeout: float | None = None) -> ExecResult:
        """Run ``cmd`` in a running container and wait for it. ``timeout`` (seconds) is how long
        the answer may take: longer than the API client's default read timeout."""
        api = self._client.api if timeout is None else self._slow_client(timeout).api
        with _translated(f"exec {command_name(cmd)}", container=container_id):
            result = api.exec_create(container_id, cmd, stdout=True, stderr=True,
                                     environment=dict(environment) if environment else None)
            output = api.exec_start(result["Id"])
            code = api.exec_inspect(result["Id"]).get("ExitCode")
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return ExecResult(exit_code=int(code if code is not None else -1), output=text)

    # -- sibling containers ----------------------------------------------------
    def ensure_image(self, image: str) -> None:
        try:
            self._client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"inspecting image {image} failed: {exc}") from exc
        log.info("pulling image %s", image)
        try:
            self._client.images.pull(image)
        except docker.errors.NotFound as exc:
            raise ConfigError(f"CERTBOT_IMAGE={image!r}: image not found locally or in its registry") from exc
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"pulling {image} failed: {exc}") from exc

    def _slow_client(self, timeout: float) -> Any:
        """A second client for calls that block for minutes (certbot via exec), with a pool big
        enough for every parallel run, so they never starve the quick calls."""
        with self._slow_lock:
            if self._slow is None or self._slow_timeout < timeout:
                try:
                    self._slow = docker.from_env(timeout=int(timeout) + 1, max_pool_size=32)
                except _DOCKER_ERRORS as exc:
                    raise DockerUnavailable(f"cannot reach the Docker API: {exc}") from exc
                self._slow_timeout = timeout
            return self._slow

    def start_detached(
        self,
        image: str,
        command: list[str],
        *,
        entrypoint: list[str],
        volumes: Mapping[str, Mapping[str, str]],
        network_mode: str | None,
        labels: Mapping[str, str],
        name: str,
        runs: int,
    ) -> str:
        """Start a long-lived container (confined as ``run_once``'s, sized for ``runs`` parallel execs);
        a stopped one of the same name is replaced. Returns its id."""
        def start() -> str:
            container = self._client.containers.run(
                image, command, entrypoint=entrypoint, detach=True, name=name,
                volumes={k: dict(v) for k, v in volumes.items()}, network_mode=network_mode,
                labels=dict(labels), init=False, **_sandbox(runs),
            )
            return str(container.id)
        with _translated(f"starting {image}", image=image):
            try:
                return start()
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: the name is taken by a leftover
                    raise
                self._client.api.remove_container(name, force=True)
                return start()

    def is_running(self, container_id: str) -> bool:
        try:
            state = self._client.api.inspect_container(container_id).get("State") or {}
        except docker.errors.NotFound:
            return False
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"inspecting container {container_id[:12]} failed: {exc}") from exc
        return bool(state.get("Running")) and not state.get("Restarting")

    def remove(self, container_id: str) -> None:
        try:
            self._client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"removing container {container_id[:12]} failed: {exc}") from exc

    def run_once(
        self,
        image: str,
        args: list[str],
        *,
        volumes: Mapping[str, Mapping[str, str]],
        environment: Mapping[str, str],
        network_mode: str | None,
        labels: Mapping[str, str],
        timeout: float,
        name: str | None = None,
    ) -> RunResult:
        """Run a container to completion; return its exit code and combined output. Always removed."""
        container = None
        try:
            with _translated(f"running {image}", image=image):
                container = self._client.containers.run(
                    image,
                    args,
                    detach=True,
                    name=name,
                    volumes={k: dict(v) for k, v in volumes.items()},
                    environment=dict(environment),
                    network_mode=network_mode,
                    labels=dict(labels),
                    **_sandbox(1),
                )
                try:
                    status = container.wait(timeout=timeout)
                    code: int | None = int(status.get("StatusCode", -1))
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                    # The engine sends wait's headers at once, so docker-py reports the timeout
                    # while reading the body: ConnectionError("... Read timed out."), not ReadTimeout.
                    if not isinstance(exc, requests.exceptions.ReadTimeout) and "timed out" not in str(exc).lower():
                        raise
                    try:
                        container.kill()
                    except docker.errors.APIError:
                        pass  # it finished just now; still reported as too slow
                    code = None
                output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
                return RunResult(code, output)
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except _DOCKER_ERRORS:
                    pass

    # -- consumers (containers told that their certificate changed) ---------------
    def restart(self, container_id: str, timeout: int = 10) -> None:
        """``POST /containers/{id}/restart``: stop (SIGTERM, then SIGKILL after ``timeout`` s) and start."""
        with _translated(f"restarting container {container_id[:12]}", container=container_id):
            self._client.api.restart(container_id, timeout=timeout)

    def children(self, container_id: str) -> set[int]:
        """Host PIDs of the child processes of a running container's main process, from
        ``GET /containers/{id}/top`` (the engine lists them; nothing runs inside the container,
        which a ``docker exec`` would, at several times the cost)."""
        with _translated(f"listing the processes of container {container_id[:12]}", container=container_id):
            listing = self._client.api.top(container_id)
            titles = [str(t).upper() for t in listing.get("Titles") or []]
            if "PID" not in titles or "PPID" not in titles:
                raise DockerUnavailable(f"container {container_id[:12]}: no process list from the engine")
            pid, ppid = titles.index("PID"), titles.index("PPID")
            rows = [(int(row[pid]), int(row[ppid])) for row in listing.get("Processes") or []]
            # Its main process's host PID, asked once per container (and again after a restart):
            # one call per look while a reload loads, not two.
            main = self._main_pids.get(container_id, 0)
            if not any(p == main for p, _ in rows):
                main = int((self._client.api.inspect_container(container_id).get("State") or {}).get("Pid") or 0)
                if not main:
                    raise DockerUnavailable(f"container {container_id[:12]}: not running")
                self._main_pids[container_id] = main
        return {p for p, parent in rows if parent == main}

    def log_lines(self, container_id: str, since: float, tail: int = 1000) -> list[str]:
        """A container's standard-error lines logged since ``since`` (UNIX time, fractions count),
        of its last ``tail`` lines (``GET /containers/{id}/logs``; the engine reads the end of the
        log, not all of it). Raises ``DockerUnavailable`` where the logging driver cannot be read."""
        with _translated(f"reading the log of container {container_id[:12]}", container=container_id):
            raw = self._client.api.logs(container_id, stdout=False, stderr=True, since=since, tail=tail)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()

    def kill(self, container_id: str, signal: str) -> None:
        """``POST /containers/{id}/kill?signal=...``: send ``signal`` (e.g. ``SIGHUP``) to its main process."""
        with _translated(f"sending {signal} to container {container_id[:12]}", container=container_id):
            self._client.api.kill(container_id, signal=signal)

    def remove_labelled(self, label: str) -> int:
        """Remove leftover containers carrying ``label`` (from a sidecar that died mid-run)."""
        try:
            leftovers = self._client.containers.list(all=True, filters={"label": label})
            for c in leftovers:
                c.remove(force=True)
            return len(leftovers)
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"removing leftover containers failed: {exc}") from exc

    # -- Swarm (a manager's API) -------------------------------------------------
    def swarm_node_id(self) -> str:
        """This engine's Swarm node id ("" when it is not in a swarm)."""
        with _translated("reading the engine's info"):
            info = self._client.api.info()
        return str(((info.get("Swarm") or {}).get("NodeID")) or "")

    def swarm_services(self) -> list[SwarmService]:
        with _translated("listing Swarm services"):
            raw = self._client.api.services()
        return [SwarmService(id=s["ID"], name=str(((s.get("Spec") or {}).get("Name")) or s["ID"][:12]),
                             labels=dict(((s.get("Spec") or {}).get("Labels")) or {}),
                             created=str(s.get("CreatedAt") or "")) for s in raw]

    def swarm_tasks(self, service: str | None = None) -> list[SwarmTask]:
        """Tasks (all services, or those of ``service`` by name), with their overlay addresses."""
        with _translated("listing Swarm tasks"):
            raw = self._client.api.tasks(filters={"service": service} if service else None)
        tasks = []
        for t in raw:
            nets: dict[str, str] = {}
            for att in t.get("NetworksAttachments") or []:
                name = str((((att.get("Network") or {}).get("Spec") or {}).get("Name")) or "")
                addrs = [a.split("/")[0] for a in att.get("Addresses") or [] if "." in a]
                if name and addrs:
                    nets[name] = addrs[0]
            running = t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running"
            tasks.append(SwarmTask(id=t["ID"], service_id=str(t.get("ServiceID") or ""),
                                   node_id=str(t.get("NodeID") or ""), slot=int(t.get("Slot") or 0),
                                   running=running, networks=nets))
        return tasks

    def swarm_nodes(self) -> list[SwarmNode]:
        with _translated("listing Swarm nodes"):
            raw = self._client.api.nodes()
        return [SwarmNode(id=n["ID"], hostname=str(((n.get("Description") or {}).get("Hostname")) or n["ID"][:12]),
                          role=str(((n.get("Spec") or {}).get("Role")) or ""),
                          available=((n.get("Spec") or {}).get("Availability") == "active"
                                     and (n.get("Status") or {}).get("State") == "ready")) for n in raw]

    # -- events ----------------------------------------------------------------
    def events(self) -> Iterator[dict[str, Any]]:
        """Container and network events, decoded. Ends (or raises) when the stream breaks."""
        try:
            stream = self._client.events(decode=True, filters={"type": ["container", "network"]})
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"subscribing to events failed: {exc}") from exc
        with self._events_lock:
            self._events = stream
        try:
            for event in stream:
                yield event
        except _DOCKER_ERRORS as exc:
            raise DockerUnavailable(f"event stream broke: {exc}") from exc
        finally:
            with self._events_lock:
                self._events = None

    def close_events(self) -> None:
        with self._events_lock:
            if self._events is not None:
                try:
                    self._events.close()
                except Exception:  # noqa: BLE001 - closing a broken stream must not fail shutdown
                    pass

