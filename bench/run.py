#!/usr/bin/env python3
"""Benchmark: how fast a burst of N new sites goes HTTPS, for the sidecar and two baselines.

For each N (default 1 10 100) and each tool, on a fresh stack with a fresh Pebble:

- sidecar: the local demo (examples/local-demo/compose.yml) with its apps scaled to 0 and an
  empty sites file; N labelled app containers are started at once; each site's clock starts
  just before its own container is started.
- caddy:   Debian's Caddy 2.6 with a Caddyfile of N sites (HTTP-01 only); the clock starts
  when `caddy run` is started.
- certbot: the classic script: one `docker run --rm certbot certonly --webroot` per site, in
  sequence, then vhosts and one `nginx -s reload`; the clock starts before the first run.

A site counts as served when a TLS handshake to 127.0.0.1 with its name as SNI presents a
certificate for that name that verifies against this run's Pebble root, and `GET /` answers 200.
Nothing here contacts anything outside this machine: Pebble, nginx, Caddy and the apps run on
private Docker networks, and the host talks to them only through ports on 127.0.0.1.

Usage: bench/run.sh [--sizes 1 10 100] [--runs K] [--tools sidecar caddy certbot] ...
Results: bench/results/<timestamp>.{md,json}, bench/results/latest.{md,png}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import docker
import docker.errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support, shared with the end-to-end tests
from tests.support.images import images as _images  # noqa: E402
from tests.support.net import Fatal, free_port, tls_context, tls_get, wait_for  # noqa: E402
DEMO = ROOT / "examples" / "local-demo"
RESULTS = ROOT / "bench" / "results"
# sidecar: N labelled app containers started at once (the container variant);
# sidecar-file: N sites written to its sites file at once, one app container already running
# (the same work as Caddy's Caddyfile and the script's loop: the declared variant).
TOOLS = ("sidecar", "sidecar-file", "caddy", "certbot")
DECLARED = ("sidecar-file", "caddy", "certbot")  # the tools of the same-work table
ROLE_LABEL = "nginx-acme-sidecar.role"
RUN_LABEL = "bench.run"
APP_PORT = 5678
DOMAIN = "bench.test"


PEBBLE_TEMPLATE = "/etc/pebble/pebble-config.json.tmpl"
# Set by main() for --pebble-retry-after off: a copy of the demo's Pebble config template
# without "retryAfter", mounted into every Pebble of the run (sidecar stack and baselines).
PEBBLE_TEMPLATE_OVERRIDE: Path | None = None


def remove_run_containers(client: Any, project: str) -> None:
    """Remove every container a run started itself (labelled ``RUN_LABEL=project``), in any state."""
    for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={project}"}):
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass


def pebble_template_without_retry_after(dest_dir: Path) -> Path:
    text = (DEMO / "pebble" / "pebble-config.json.tmpl").read_text()
    stripped = re.sub(r'\s*"retryAfter"\s*:\s*\{[^}]*\},?', "", text)
    json.loads(stripped.replace("@TLS_DIR@", "/x").replace("@CERT_VALIDITY@", "1"))  # still valid JSON
    path = dest_dir / "pebble-config.json.tmpl"
    path.write_text(stripped)
    os.chmod(dest_dir, 0o755)
    os.chmod(path, 0o644)
    return path


def _env_images() -> dict[str, str]:
    """The test images and Caddy's, each overridable by its variable (NGINX_IMAGE=...)."""
    return _images(CADDY_IMAGE="local/caddy:test")


# -- small helpers ---------------------------------------------------------------------------

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def site_names(n: int) -> list[str]:
    return [f"s{i}.{DOMAIN}" for i in range(1, n + 1)]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def poll_interval(n: int) -> float:
    """Probe every site this often: fine resolution for small N, bounded load for large N
    (at most about 200 TLS handshakes a second in total for N <= 100, 500 attempts for N = 1,000,
    most of them refused at once by nginx's default server until the certificate is there)."""
    return min(2.0, max(0.1, n * 0.005)) if n > 100 else min(0.5, max(0.05, n * 0.005))


# -- TLS probing ---------------------------------------------------------------------------------

def served(port: int, name: str, ctx: ssl.SSLContext) -> bool:
    """True when `name` is served over TLS with a certificate for it from this run's Pebble."""
    try:
        return tls_get(port, name, "/", ctx, timeout=3.0).status == 200
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return False


def pebble_root(mgmt_port: int, listener_ca_pem: str) -> str:
    r = tls_get(mgmt_port, "localhost", "/roots/0", listener_ca_pem)
    if r.status != 200 or "BEGIN CERTIFICATE" not in r.body:
        raise RuntimeError(f"Pebble /roots/0 answered {r.status}")
    return r.body


def wait_sites(port: int, root_pem: str, starts: dict[str, float], timeout: float,
               start_hook: Callable[[str], None] | None = None) -> dict[str, float | None]:
    """One thread per site: optionally start it (start_hook), then probe until served.
    Returns seconds from starts[name] (set by the caller or by the hook) to first success."""
    ctx = tls_context(root_pem)
    interval = poll_interval(len(starts))
    result: dict[str, float | None] = {}
    deadline = time.monotonic() + timeout

    def one(name: str) -> None:
        if start_hook is not None:
            start_hook(name)  # records starts[name] itself
        t0 = starts[name]
        while time.monotonic() < deadline:
            if served(port, name, ctx):
                result[name] = time.monotonic() - t0
                return
            time.sleep(interval)
        result[name] = None

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(starts))) as pool:
        for f in [pool.submit(one, n) for n in starts]:
            f.result()
    return result


# -- resource accounting from the container's cgroup ---------------------------------------------

class Cgroup:
    """CPU seconds and memory of one container, from its cgroup (v2 or v1) or `docker stats`."""

    def __init__(self, container: Any) -> None:
        self.container = container
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        self.v2: Path | None = None
        self.v1: dict[str, Path] = {}
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            hid, ctrls, path = line.split(":", 2)
            if hid == "0" and not ctrls and Path("/sys/fs/cgroup/cgroup.controllers").exists():
                self.v2 = Path("/sys/fs/cgroup" + path)
            for c in ctrls.split(","):
                if c:
                    self.v1[c] = Path(path)
        self.source = "cgroup v2" if self.v2 else ("cgroup v1" if self.v1 else "docker stats")

    def _v1file(self, ctrl: str, name: str) -> Path | None:
        rel = self.v1.get(ctrl)
        if rel is None:
            return None
        for mount in (ctrl, "cpu,cpuacct", "cpuacct,cpu"):
            p = Path("/sys/fs/cgroup") / mount / str(rel).lstrip("/") / name
            if p.exists():
                return p
        return None

    def _stats(self) -> dict[str, Any]:
        return self.container.stats(stream=False, one_shot=True)  # type: ignore[no-any-return]

    @staticmethod
    def _kv(path: Path) -> dict[str, int]:
        out = {}
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                out[k] = int(v)
        return out

    def cpu_seconds(self) -> float:
        if self.v2:
            return self._kv(self.v2 / "cpu.stat")["usage_usec"] / 1e6
        p = self._v1file("cpuacct", "cpuacct.usage")
        if p:
            return int(p.read_text()) / 1e9
        return float(self._stats()["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9

    def memory(self) -> tuple[int | None, int, int]:
        """(peak bytes since the container started, if the kernel keeps it; current bytes; RSS bytes)."""
        if self.v2:
            peak_f = self.v2 / "memory.peak"
            peak = int(peak_f.read_text()) if peak_f.exists() else None
            stat = self._kv(self.v2 / "memory.stat")
            return peak, int((self.v2 / "memory.current").read_text()), stat.get("anon", 0)
        p = self._v1file("memory", "memory.usage_in_bytes")
        if p:
            peak = int((p.parent / "memory.max_usage_in_bytes").read_text())
            stat = self._kv(p.parent / "memory.stat")
            rss = stat.get("total_rss", stat.get("rss", 0))
            return peak, int(p.read_text()), rss
        m = self._stats().get("memory_stats", {})
        st = m.get("stats", {})
        return m.get("max_usage"), int(m.get("usage", 0)), int(st.get("total_rss", st.get("anon", st.get("rss", 0))))


class MemorySampler(threading.Thread):
    """Samples a container's memory every 0.25 s; keeps the maxima."""

    def __init__(self, cg: Cgroup) -> None:
        super().__init__(daemon=True)
        self.cg = cg
        self.max_current = 0
        self.max_rss = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        try:
            _, cur, rss = self.cg.memory()
        except (OSError, KeyError, docker.errors.APIError):
            return
        self.max_current = max(self.max_current, cur)
        self.max_rss = max(self.max_rss, rss)

    def run(self) -> None:
        while not self._halt.wait(0.25):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()


class CertbotWatcher(threading.Thread):
    """Counts the certbot runs of one sidecar and the containers they ran in (docker events,
    label role=certbot): a run is an `exec` of the run script in the long-lived certbot container
    (CERTBOT_RUNNER=exec) or a container of its own (CERTBOT_RUNNER=container).
    A container is ours when it shares the sidecar's network namespace or mounts one of the
    project's volumes; if it is already gone when inspected, its site label decides."""

    def __init__(self, sidecar_id: str, project: str) -> None:
        super().__init__(daemon=True)
        self.client = docker.from_env()
        self.sidecar_id = sidecar_id
        self.project = project
        self.count = 0
        self.runs = 0
        self.ours: dict[str, bool] = {}
        self.exec_started: dict[str, int] = {}  # execID -> timeNano of its exec_start
        self.exec_seconds: list[float] = []  # each certonly exec, start to end, as the engine saw it
        self.stream = self.client.events(
            decode=True, filters={"type": "container", "event": ["start", "exec_start", "exec_die"],
                                  "label": f"{ROLE_LABEL}=certbot"})

    def _ours(self, event: dict[str, Any]) -> bool:
        if event["id"] in self.ours:
            return self.ours[event["id"]]
        try:
            attrs = self.client.api.inspect_container(event["id"])
        except docker.errors.NotFound:
            site = event.get("Actor", {}).get("Attributes", {}).get("nginx-acme-sidecar.site", "")
            return bool(site.endswith("." + DOMAIN))
        mine = self.sidecar_id in (attrs.get("HostConfig", {}).get("NetworkMode") or "") or any(
            (m.get("Name") or "").startswith(self.project + "_") for m in attrs.get("Mounts", []))
        self.ours[event["id"]] = mine
        return mine

    def run(self) -> None:
        try:
            for event in self.stream:
                action = str(event.get("Action") or event.get("status") or "")
                exec_id = str(event.get("Actor", {}).get("Attributes", {}).get("execID", ""))
                if action.startswith("exec_die"):
                    t0 = self.exec_started.pop(exec_id, None)
                    if t0 is not None:
                        self.exec_seconds.append((int(event.get("timeNano", 0)) - t0) / 1e9)
                    continue
                if action.startswith("exec_start") and not ("certbot-run" in action and " certonly " in action):
                    continue  # not a certificate request (the account registration, or a look inside)
                if action.startswith("exec_start") and exec_id:
                    self.exec_started[exec_id] = int(event.get("timeNano", 0))
                if self._ours(event):
                    if action == "start":
                        self.count += 1
                        # a per-run container names its site; the long-lived one's start is not a run
                        site = event.get("Actor", {}).get("Attributes", {}).get("nginx-acme-sidecar.site")
                        self.runs += bool(site)
                    else:
                        self.runs += 1
        except Exception:  # noqa: BLE001 - the stream is closed to stop the thread
            pass

    def stop(self) -> int:
        time.sleep(1.0)  # let late events arrive
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
        self.join(5)
        self.client.close()
        return self.count


class EventCounter(threading.Thread):
    """Counts container and network events on the whole engine (each one pokes the sidecar)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.client = docker.from_env()
        self.count = 0
        self.stream = self.client.events(decode=True, filters={"type": ["container", "network"]})

    def run(self) -> None:
        try:
            for _ in self.stream:
                self.count += 1
        except Exception:  # noqa: BLE001 - the stream is closed to stop the thread
            pass

    def stop(self) -> int:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
        self.join(5)
        self.client.close()
        return self.count


# -- results -------------------------------------------------------------------------------------

@dataclass
class RunResult:
    tool: str
    n: int
    run: int
    per_site: dict[str, float | None] = field(default_factory=dict)
    total_s: float | None = None
    reloads: int | None = None
    certbot_containers: int | None = None
    certbot_runs: int | None = None
    certbot_cpu_s: float | None = None
    cpu_s: float | None = None
    nginx_cpu_s: float | None = None
    certbot_exec_s: float | None = None  # median seconds of one certonly exec (inside its container)
    peak_mb: float | None = None
    peak_rss_mb: float | None = None
    idle_cpu_pct: float | None = None
    idle_rss_mb: float | None = None
    idle_seconds: float | None = None
    idle_engine_events: int | None = None
    setup_s: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [t for t in self.per_site.values() if t is not None]

    @property
    def served(self) -> int:
        return len(self.times)

    @property
    def cpu_per_cert(self) -> float | None:
        """All in: the sidecar's, its certbot container's and nginx's CPU seconds per site served."""
        parts = (self.cpu_s, self.certbot_cpu_s, self.nginx_cpu_s)
        if self.tool not in ("sidecar", "sidecar-file") or any(p is None for p in parts) or not self.served:
            return None
        return sum(p for p in parts if p is not None) / self.served


def mb(b: int | float | None) -> float | None:
    return None if b is None else round(b / 2**20, 1)


@dataclass
class Tool:
    """One tool under test: the engine, the images to use and where its logs go."""
    client: docker.DockerClient
    images: dict[str, str]
    logdir: Path


# -- tool 1: the sidecar -------------------------------------------------------------------------

def sites_yaml(names: list[str]) -> str:
    """The declared variant's sites file: every site proxied to the one app container."""
    return "sites:\n" + "".join(f"  - domains: [{n}]\n    upstream: http://app:{APP_PORT}\n" for n in names)


class SidecarBench(Tool):
    def run(self, n: int, k: int, timeout: float, idle_seconds: float, declared: bool = False) -> RunResult:
        """declared: the N sites are written to the sites file at once (one app container already
        runs); otherwise N labelled app containers are started at once."""
        tool = "sidecar-file" if declared else "sidecar"
        res = RunResult(tool, n, k)
        project = "bench" + uuid.uuid4().hex[:8]
        sites_dir = Path(tempfile.mkdtemp(prefix=f"{project}-sites-"))
        (sites_dir / "sites.yml").write_text("sites: []\n")
        os.chmod(sites_dir, 0o755)
        os.chmod(sites_dir / "sites.yml", 0o644)
        https_port, http_port, mgmt_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            **{k_: v for k_, v in self.images.items() if k_ != "CADDY_IMAGE"},
            "HTTP_PORT": str(http_port),
            "HTTPS_PORT": str(https_port),
            "PEBBLE_MGMT_PORT": str(mgmt_port),
            "STATUS_PORT_HOST": str(free_port()),
            "DEMO_NETWORK": f"{project}-net",
            "SITES_DIR": str(sites_dir),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info"),
            "BENCH_NGINX_CONTAINER": f"{project}-nginx-1",
            "BENCH_PEBBLE_TEMPLATE": str(PEBBLE_TEMPLATE_OVERRIDE or ""),
        }
        network = f"{project}-net"

        def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            files = [DEMO / "compose.yml", ROOT / "bench" / "compose.bench.yml"]
            if PEBBLE_TEMPLATE_OVERRIDE is not None:
                files.append(ROOT / "bench" / "compose.pebble-config.yml")
            cmd = ["docker", "compose", "-p", project, *[a for f in files for a in ("-f", str(f))], *args]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if check and proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            return proc

        def service(name: str) -> Any:
            found = self.client.containers.list(all=True, filters={"label": [
                f"com.docker.compose.project={project}", f"com.docker.compose.service={name}"]})
            if not found:
                raise RuntimeError(f"no container for service {name}")
            return found[0]

        sidecar = None
        try:
            t_setup = time.monotonic()
            log(f"{tool} N={n} run {k}: compose up {project}")
            compose("up", "-d", "--no-build", "--pull", "never", "--scale", "app-a=0", "--scale", "app-b=0")
            sidecar = service("sidecar")
            if declared:
                self.client.containers.run(
                    self.images["APP_IMAGE"], [f"-listen=:{APP_PORT}", "-text=hello from app"],
                    name=f"{project}-app", detach=True, network=network, labels={RUN_LABEL: project},
                    networking_config={network: self.client.api.create_endpoint_config(aliases=["app"])})
            wait_for("the sidecar's ready line", lambda: re.search(
                r"\bready:", sidecar.logs().decode("utf-8", "replace")), timeout=180, interval=0.3)
            # Let the start-up pass finish: logs quiet for 2 s.
            last = [sidecar.logs().decode("utf-8", "replace"), time.monotonic()]

            def quiet() -> bool:
                now_logs = sidecar.logs().decode("utf-8", "replace")
                if now_logs != last[0]:
                    last[0], last[1] = now_logs, time.monotonic()
                return bool(time.monotonic() - last[1] >= 2.0)
            wait_for("the sidecar to settle", quiet, timeout=60, interval=0.25)
            reloads_before = last[0].count("nginx reloaded")
            _, ca = service("pebble").exec_run(["cat", "/pebble-ca/ca.pem"])
            root = pebble_root(mgmt_port, ca.decode())
            res.setup_s = round(time.monotonic() - t_setup, 1)

            cg = Cgroup(sidecar)
            res.notes.append(f"resources from {cg.source}")
            watcher = CertbotWatcher(sidecar.id, project)
            watcher.start()
            runner_cg = None
            try:
                runner_cg = Cgroup(self.client.containers.get(f"{sidecar.name}-certbot"))
                certbot_cpu0 = runner_cg.cpu_seconds()
            except (docker.errors.NotFound, OSError, KeyError):
                pass  # CERTBOT_RUNNER=container: a container per run, not measured
            nginx_cg = Cgroup(service("nginx"))
            nginx_cpu0 = nginx_cg.cpu_seconds()
            sampler = MemorySampler(cg)
            sampler.start()
            cpu0 = cg.cpu_seconds()
            starts: dict[str, float] = {}
            start_errors: list[str] = []

            def start_app(name: str) -> None:
                starts[name] = time.monotonic()
                try:
                    self.client.containers.run(
                        self.images["APP_IMAGE"], [f"-listen=:{APP_PORT}", f"-text=hello from {name}"],
                        name=f"{project}-{name.split('.')[0]}", detach=True, network=network,
                        labels={"acme.domains": name, "acme.port": str(APP_PORT), RUN_LABEL: project})
                except docker.errors.APIError as exc:
                    start_errors.append(f"{name}: {exc}")

            names = site_names(n)
            if declared:
                log(f"{tool} N={n} run {k}: writing {n} site(s) to the sites file at once")
                tmp = sites_dir / ".sites.yml.tmp"
                tmp.write_text(sites_yaml(names))
                os.chmod(tmp, 0o644)
                burst0 = time.monotonic()
                os.replace(tmp, sites_dir / "sites.yml")
                starts.update({nm: burst0 for nm in names})
                res.per_site = wait_sites(https_port, root, starts, timeout)
            else:
                log(f"{tool} N={n} run {k}: starting {n} app container(s) at once")
                burst0 = time.monotonic()
                starts.update({nm: 0.0 for nm in names})
                res.per_site = wait_sites(https_port, root, starts, timeout, start_app)
            end = max((starts[nm] + t for nm, t in res.per_site.items() if t is not None), default=None)
            res.total_s = None if res.served < n or end is None else end - burst0
            res.cpu_s = cg.cpu_seconds() - cpu0
            res.nginx_cpu_s = round(nginx_cg.cpu_seconds() - nginx_cpu0, 2)
            sampler.stop()
            peak, _, _ = cg.memory()
            res.peak_mb = mb(peak if peak is not None else sampler.max_current)
            res.peak_rss_mb = mb(sampler.max_rss)
            if runner_cg is not None:
                res.certbot_cpu_s = round(runner_cg.cpu_seconds() - certbot_cpu0, 2)
            res.certbot_containers = watcher.stop()
            res.certbot_runs = watcher.runs
            if watcher.exec_seconds:
                res.certbot_exec_s = round(statistics.median(watcher.exec_seconds), 2)
            res.reloads = sidecar.logs().decode("utf-8", "replace").count("nginx reloaded") - reloads_before
            if start_errors:
                res.notes.append(f"{len(start_errors)} app start(s) failed: {start_errors[0]}")
            log(f"{tool} N={n} run {k}: served {res.served}/{n}, total {res.total_s}, CPU per certificate "
                f"{fmt(res.cpu_per_cert, 3)} s (sidecar {fmt(res.cpu_s, 2)}, certbot {fmt(res.certbot_cpu_s, 2)}, "
                f"nginx {fmt(res.nginx_cpu_s, 2)}), certbot exec {fmt(res.certbot_exec_s, 2)} s")
            if idle_seconds > 0 and res.served == n:
                log(f"{tool} N={n} run {k}: measuring idle for {idle_seconds:.0f}s")
                counter = EventCounter()
                counter.start()
                c0, w0 = cg.cpu_seconds(), time.monotonic()
                time.sleep(idle_seconds)
                c1, w1 = cg.cpu_seconds(), time.monotonic()
                res.idle_engine_events = counter.stop()
                res.idle_cpu_pct = round(100 * (c1 - c0) / (w1 - w0), 2)
                res.idle_rss_mb = mb(cg.memory()[2])
                res.idle_seconds = round(w1 - w0, 1)
        except Exception as exc:  # noqa: BLE001 - one failed run is reported, the others go on
            res.error = f"{type(exc).__name__}: {exc}"
            log(f"{tool} N={n} run {k}: ERROR {res.error}")
        finally:
            if sidecar is not None:
                try:
                    (self.logdir / f"{tool}-n{n}-run{k}.log").write_bytes(sidecar.logs())
                except Exception:  # noqa: BLE001
                    pass
            remove_run_containers(self.client, project)
            compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
            shutil.rmtree(sites_dir, ignore_errors=True)
        return res


# -- baselines: shared plumbing -------------------------------------------------------------------

class Env:
    """A network, some volumes and containers for one baseline run; removed by close()."""

    def __init__(self, client: docker.DockerClient, prefix: str) -> None:
        self.client = client
        self.project = prefix + uuid.uuid4().hex[:8]
        self.network = client.networks.create(f"{self.project}-net", driver="bridge",
                                              labels={RUN_LABEL: self.project})
        self.volumes: list[str] = []
        self.tmpdirs: list[Path] = []

    def volume(self, name: str) -> str:
        full = f"{self.project}_{name}"
        self.client.volumes.create(full, labels={RUN_LABEL: self.project})
        self.volumes.append(full)
        return full

    def tmpdir(self, name: str) -> Path:
        p = Path(tempfile.mkdtemp(prefix=f"{self.project}-{name}-"))
        os.chmod(p, 0o755)
        self.tmpdirs.append(p)
        return p

    def run(self, image: str, command: list[str] | None, alias: str, **kw: Any) -> Any:
        net = self.network.name
        c = self.client.containers.create(
            image, command, name=f"{self.project}-{alias}", labels={RUN_LABEL: self.project}, detach=True,
            network=net, networking_config={net: self.client.api.create_endpoint_config(aliases=[alias])}, **kw)
        c.start()
        return c

    def pebble(self, dns_target: str, mgmt_port: int, ca_volume: str) -> tuple[Any, str]:
        images = _env_images()
        volumes = {ca_volume: {"bind": "/pebble-ca", "mode": "rw"}}
        if PEBBLE_TEMPLATE_OVERRIDE is not None:
            volumes[str(PEBBLE_TEMPLATE_OVERRIDE)] = {"bind": PEBBLE_TEMPLATE, "mode": "ro"}
        c = self.run(images["PEBBLE_IMAGE"], None, "pebble", environment={"DNS_TARGET": dns_target},
                     volumes=volumes,
                     ports={"15000/tcp": ("127.0.0.1", mgmt_port)})

        def ready() -> str:
            code, out = c.exec_run(["bash", "-c", "test -s /pebble-ca/ca.pem && exec 3<>/dev/tcp/127.0.0.1/14000 "
                                    "&& cat /pebble-ca/ca.pem"])
            if code != 0:
                c.reload()
                if c.status == "exited":
                    raise Fatal(f"pebble exited: {c.logs()[-500:]!r}")
                return ""
            return pebble_root(mgmt_port, out.decode())
        return c, wait_for("Pebble", ready, timeout=90, interval=0.3)

    def close(self) -> None:
        remove_run_containers(self.client, self.project)
        try:
            self.network.remove()
        except docker.errors.APIError:
            pass
        for v in self.volumes:
            try:
                self.client.volumes.get(v).remove(force=True)
            except docker.errors.APIError:
                pass
        for p in self.tmpdirs:
            shutil.rmtree(p, ignore_errors=True)


# -- tool 2: Caddy --------------------------------------------------------------------------------

def caddyfile(names: list[str]) -> str:
    head = (
        "{\n"
        "\tadmin off\n"
        "\t# Pebble on the private network; HTTP-01 only (no TLS-ALPN), as for the other tools.\n"
        "\tcert_issuer acme https://pebble:14000/dir {\n"
        "\t\ttrusted_roots /pebble-ca/ca.pem\n"
        "\t\tdisable_tlsalpn_challenge\n"
        "\t}\n"
        "}\n"
    )
    return head + "".join(f"{n} {{\n\treverse_proxy app:{APP_PORT}\n}}\n" for n in names)


def caddy_failures(log_text: str) -> list[str]:
    """Summarise Caddy's failed attempts ("could not get certificate from issuer") by cause."""
    causes: dict[str, int] = {}
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") != "could not get certificate from issuer":
            continue
        err = str(entry.get("error", ""))
        if "invalid Retry-After header" in err:
            cause = "the finalize response carried an HTTP-date Retry-After, which Caddy 2.6.2 rejects"
        elif "JWS verification error" in err:
            cause = "JWS verification error (account key race)"
        else:
            cause = re.sub(r"https://\S+", "URL", err)[:120]
        causes[cause] = causes.get(cause, 0) + 1
    return [f"caddy: {c} failed attempt(s): {cause}; Caddy retries after 1, 2, 2, 5 ... min"
            for cause, c in sorted(causes.items(), key=lambda kv: -kv[1])]


class CaddyBench(Tool):
    def run(self, n: int, k: int, timeout: float) -> RunResult:
        res = RunResult("caddy", n, k, reloads=0, certbot_containers=0, certbot_runs=0)
        env = None
        caddy = None
        try:
            t_setup = time.monotonic()
            env = Env(self.client, "benchcaddy")
            log(f"caddy N={n} run {k}: setting up {env.project}")
            http_port, https_port, mgmt_port = free_port(), free_port(), free_port()
            ca_vol = env.volume("pebble-ca")
            conf = env.tmpdir("caddy")
            names = site_names(n)
            (conf / "Caddyfile").write_text(caddyfile(names))
            os.chmod(conf / "Caddyfile", 0o644)
            env.run(self.images["APP_IMAGE"], [f"-listen=:{APP_PORT}", "-text=hello from app"], "app")
            # Caddy's container idles until Pebble (which resolves every name to it) is ready.
            caddy = env.run(self.images["CADDY_IMAGE"], ["sleep", "infinity"], "caddy",
                            volumes={str(conf): {"bind": "/etc/caddy", "mode": "ro"},
                                     ca_vol: {"bind": "/pebble-ca", "mode": "ro"}},
                            ports={"80/tcp": ("127.0.0.1", http_port), "443/tcp": ("127.0.0.1", https_port)})
            _, root = env.pebble("caddy", mgmt_port, ca_vol)
            res.setup_s = round(time.monotonic() - t_setup, 1)
            cg = Cgroup(caddy)
            res.notes.append(f"resources from {cg.source}")
            sampler = MemorySampler(cg)
            sampler.start()
            cpu0 = cg.cpu_seconds()
            log(f"caddy N={n} run {k}: caddy run with {n} site(s)")
            t0 = time.monotonic()
            caddy.exec_run(["sh", "-c", "exec caddy run --config /etc/caddy/Caddyfile --adapter caddyfile "
                            ">/tmp/caddy.log 2>&1"], detach=True)
            res.per_site = wait_sites(https_port, root, {nm: t0 for nm in names}, timeout)
            res.total_s = max(res.times) if res.served == n else None
            res.cpu_s = cg.cpu_seconds() - cpu0
            sampler.stop()
            peak, _, _ = cg.memory()
            res.peak_mb = mb(peak if peak is not None else sampler.max_current)
            res.peak_rss_mb = mb(sampler.max_rss)
            log(f"caddy N={n} run {k}: served {res.served}/{n}, total {res.total_s}")
        except Exception as exc:  # noqa: BLE001
            res.error = f"{type(exc).__name__}: {exc}"
            log(f"caddy N={n} run {k}: ERROR {res.error}")
        finally:
            if caddy is not None:
                try:
                    _, out = caddy.exec_run(["cat", "/tmp/caddy.log"])
                    (self.logdir / f"caddy-n{n}-run{k}.log").write_bytes(out)
                    res.notes += caddy_failures(out.decode("utf-8", "replace"))
                except Exception:  # noqa: BLE001
                    pass
            if env is not None:
                env.close()
        return res


# -- tool 3: sequential certbot containers, then one reload -----------------------------------------

NGINX_DEFAULT = """\
# HTTP: ACME challenges from the shared webroot, everything else to HTTPS.
server {
    listen 80 default_server;
    location /.well-known/acme-challenge/ { root /var/www/acme; }
    location / { return 308 https://$host$request_uri; }
}
# HTTPS for unknown names: refuse the handshake.
server {
    listen 443 ssl default_server;
    ssl_reject_handshake on;
}
"""

NGINX_VHOST = """\
server {{
    listen 443 ssl;
    server_name {name};
    ssl_certificate /etc/letsencrypt/live/{name}/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/{name}/privkey.pem;
    location / {{ proxy_pass http://app:{port}; }}
}}
"""


class CertbotBench(Tool):
    def run(self, n: int, k: int, timeout: float) -> RunResult:
        res = RunResult("certbot", n, k, certbot_containers=0, certbot_runs=0, reloads=0)
        env = None
        logs: list[str] = []
        try:
            t_setup = time.monotonic()
            env = Env(self.client, "benchcertbot")
            log(f"certbot N={n} run {k}: setting up {env.project}")
            http_port, https_port, mgmt_port = free_port(), free_port(), free_port()
            ca_vol, certs_vol, webroot_vol = env.volume("pebble-ca"), env.volume("certs"), env.volume("webroot")
            conf = env.tmpdir("conf")
            (conf / "default.conf").write_text(NGINX_DEFAULT)
            os.chmod(conf / "default.conf", 0o644)
            env.run(self.images["APP_IMAGE"], [f"-listen=:{APP_PORT}", "-text=hello from app"], "app")
            nginx = env.run(self.images["NGINX_IMAGE"], None, "nginx",
                            volumes={str(conf): {"bind": "/etc/nginx/conf.d", "mode": "ro"},
                                     certs_vol: {"bind": "/etc/letsencrypt", "mode": "ro"},
                                     webroot_vol: {"bind": "/var/www/acme", "mode": "ro"}},
                            ports={"80/tcp": ("127.0.0.1", http_port), "443/tcp": ("127.0.0.1", https_port)})
            _, root = env.pebble("nginx", mgmt_port, ca_vol)
            res.setup_s = round(time.monotonic() - t_setup, 1)
            names = site_names(n)
            issued: list[str] = []
            log(f"certbot N={n} run {k}: {n} certbot run(s) in sequence, then one reload")
            t0 = time.monotonic()

            stop = threading.Event()  # the timeout came: no more runs (close() removes what is left)

            def script() -> None:
                for name in names:
                    if stop.is_set():
                        return
                    cmd = [
                        "docker", "run", "--rm", "--network", env.network.name,
                        "--label", f"{RUN_LABEL}={env.project}",
                        "-v", f"{certs_vol}:/etc/letsencrypt", "-v", f"{webroot_vol}:/var/www/acme",
                        "-v", f"{ca_vol}:/pebble-ca:ro", "-e", "REQUESTS_CA_BUNDLE=/pebble-ca/ca.pem",
                        self.images["CERTBOT_IMAGE"], "certonly", "--webroot", "-w", "/var/www/acme",
                        "-d", name, "--cert-name", name, "--non-interactive", "--agree-tos",
                        "--register-unsafely-without-email", "--server", "https://pebble:14000/dir",
                        "--key-type", "ecdsa", "--keep-until-expiring",
                    ]
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                    res.certbot_containers = (res.certbot_containers or 0) + 1
                    res.certbot_runs = (res.certbot_runs or 0) + 1
                    logs.append(f"== {name}: exit {p.returncode}\n{p.stdout}{p.stderr}")
                    if p.returncode == 0:
                        issued.append(name)
                for name in issued:
                    (conf / f"{name}.conf").write_text(NGINX_VHOST.format(name=name, port=APP_PORT))
                    os.chmod(conf / f"{name}.conf", 0o644)
                code, out = nginx.exec_run(["sh", "-c", "nginx -t && nginx -s reload"])
                logs.append(f"== nginx -t && nginx -s reload: exit {code}\n{out.decode('utf-8', 'replace')}")
                if code == 0:
                    res.reloads = 1

            runner = threading.Thread(target=script, daemon=True)
            runner.start()
            res.per_site = wait_sites(https_port, root, {nm: t0 for nm in names}, timeout)
            runner.join(timeout=max(1.0, timeout - (time.monotonic() - t0)))
            stop.set()
            runner.join(timeout=310)  # the run in progress (docker run's own timeout is 300 s)
            res.total_s = max(res.times) if res.served == n else None
            log(f"certbot N={n} run {k}: served {res.served}/{n}, total {res.total_s}")
        except Exception as exc:  # noqa: BLE001
            res.error = f"{type(exc).__name__}: {exc}"
            log(f"certbot N={n} run {k}: ERROR {res.error}")
        finally:
            try:
                (self.logdir / f"certbot-n{n}-run{k}.log").write_text("\n".join(logs))
            except OSError:
                pass
            if env is not None:
                env.close()
        return res


# -- aggregation and output -----------------------------------------------------------------------

def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


@dataclass
class Row:
    n: int
    tool: str
    runs: int
    served: str
    median_s: float | None
    p95_s: float | None
    max_s: float | None
    total_s: float | None
    reloads: float | None
    certbot_containers: float | None
    certbot_runs: float | None
    certbot_cpu_s: float | None
    cpu_s: float | None
    peak_mb: float | None
    peak_rss_mb: float | None
    idle_cpu_pct: float | None
    idle_rss_mb: float | None
    idle_engine_events: float | None
    errors: list[str]
    nginx_cpu_s: float | None = None
    cpu_per_cert: float | None = None
    certbot_exec_s: float | None = None


def aggregate(results: list[RunResult]) -> list[Row]:
    rows = []
    keys = sorted({(r.n, TOOLS.index(r.tool)) for r in results})
    for n, ti in keys:
        tool = TOOLS[ti]
        rs = [r for r in results if r.n == n and r.tool == tool]
        ok = [r for r in rs if r.times]
        rows.append(Row(
            n=n, tool=tool, runs=len(rs),
            served="/".join(str(r.served) for r in rs) + f" of {n}",
            median_s=_median([statistics.median(r.times) for r in ok]),
            p95_s=_median([percentile(r.times, 95) for r in ok]),
            max_s=_median([max(r.times) for r in ok]),
            total_s=_median([r.total_s for r in rs]),
            reloads=_median([r.reloads for r in rs if r.error is None]),
            certbot_containers=_median([r.certbot_containers for r in rs if r.error is None]),
            certbot_runs=_median([r.certbot_runs for r in rs if r.error is None]),
            certbot_cpu_s=_median([r.certbot_cpu_s for r in rs if r.error is None]),
            cpu_s=_median([r.cpu_s for r in rs]),
            peak_mb=_median([r.peak_mb for r in rs]),
            peak_rss_mb=_median([r.peak_rss_mb for r in rs]),
            idle_cpu_pct=_median([r.idle_cpu_pct for r in rs]),
            idle_rss_mb=_median([r.idle_rss_mb for r in rs]),
            idle_engine_events=_median([r.idle_engine_events for r in rs]),
            errors=[r.error for r in rs if r.error],
            nginx_cpu_s=_median([r.nginx_cpu_s for r in rs if r.error is None]),
            cpu_per_cert=_median([r.cpu_per_cert for r in rs if r.error is None]),
            certbot_exec_s=_median([r.certbot_exec_s for r in rs if r.error is None]),
        ))
    return rows


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    if float(v).is_integer() and digits <= 1:
        return str(int(v)) if abs(v) >= 10 else f"{v:.{digits}f}"
    return f"{v:.{digits}f}"


def table(rows: list[Row], skipped: dict[tuple[int, str], str] | None = None) -> str:
    out = [
        "| N | tool | served | median s | p95 s | max s | total s | nginx reloads | certbot runs "
        "| certbot containers | certbot exec s | certbot CPU s | nginx CPU s | CPU s | CPU s per certificate "
        "| peak MB | peak RSS MB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    entries: list[tuple[int, int, Row | str]] = [(r.n, TOOLS.index(r.tool), r) for r in rows]
    entries += [(n, TOOLS.index(t), why) for (n, t), why in (skipped or {}).items()]
    for n, ti, r in sorted(entries, key=lambda e: (e[0], e[1])):
        if isinstance(r, str):
            out.append(f"| {n} | {TOOLS[ti]} | {r} |" + " |" * 14)
            continue
        out.append(
            f"| {r.n} | {r.tool} | {r.served} | {fmt(r.median_s)} | {fmt(r.p95_s)} | {fmt(r.max_s)} | "
            f"{fmt(r.total_s)} | {fmt(r.reloads, 0)} | {fmt(r.certbot_runs, 0)} | {fmt(r.certbot_containers, 0)} | "
            f"{fmt(r.certbot_exec_s, 2)} | {fmt(r.certbot_cpu_s)} | {fmt(r.nginx_cpu_s)} | {fmt(r.cpu_s)} | "
            f"{fmt(r.cpu_per_cert, 2)} | {fmt(r.peak_mb, 0)} | {fmt(r.peak_rss_mb, 0)} |")
    return "\n".join(out)


def one_line(text: str, limit: int = 160) -> str:
    """A note or error for the results page: its first line, at most ``limit`` characters."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[:limit - 1] + "…"


def skipped_runs(meta: dict[str, Any]) -> dict[tuple[int, str], str]:
    cap = meta.get("baseline_max")
    if not cap:
        return {}
    return {(n, t): f"not run (stopped at N = {cap}: `--baseline-max`)"
            for n in meta["sizes"] if n > cap for t in ("caddy", "certbot") if t in meta["tools"]}


def git_info() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "sidecar", "Dockerfile"],
                               capture_output=True, text=True).stdout.strip()
        return f"{head}{' with uncommitted changes in sidecar/' if dirty else ''}"
    except OSError:
        return "unknown"


def markdown(rows: list[Row], results: list[RunResult], meta: dict[str, Any]) -> str:
    idle = [r for r in rows if r.idle_cpu_pct is not None]
    declared = [r for r in rows if r.tool in DECLARED]
    containers = [r for r in rows if r.tool not in DECLARED]
    lines = [
        f"# Benchmark {meta['timestamp']}",
        "",
        (f"Merged from {', '.join(meta['merged_from'])}.\n\n" if meta.get("merged_from") else "")
        + f"Sizes {' '.join(map(str, meta['sizes']))}"
        + (f" (containers: {' '.join(map(str, meta.get('container_sizes', meta['sizes'])))})"
           if "sidecar" in meta["tools"] else "")
        + (f", up to {meta['runs']} run(s) each (the served column lists each run's count)"
           if meta.get("merged_from") else f", {meta['runs']} run(s) each")
        + " "
        f"(medians across runs), tools: {', '.join(meta['tools'])}. Total bench time {meta['elapsed_s']:.0f} s.",
        "",
    ]
    if declared:
        lines += [
            "Sites declared up front, the same work for every tool (sidecar-file: N sites written at once to the "
            "running sidecar's sites file, one app container; caddy: a Caddyfile of N sites, `caddy run`; "
            "certbot: the classic script's loop):",
            "",
            table(declared, skipped_runs(meta)),
            "",
        ]
    if containers:
        lines += [
            "Sites as new containers (sidecar: N labelled app containers started at once; the clock includes "
            "starting them):",
            "",
            table(containers),
            "",
        ]
    for r in idle:
        lines.append(f"Sidecar idle with {r.n} sites (after all were served, over {meta['idle_seconds']:.0f} s): "
                     f"**{fmt(r.idle_cpu_pct, 2)} % of one core**, RSS **{fmt(r.idle_rss_mb)} MB** "
                     f"({fmt(r.idle_engine_events, 0)} container/network events on the shared engine meanwhile, "
                     "each of which wakes the sidecar).")
        lines.append("")
    failed = [r for r in rows if r.errors]
    if failed:
        lines.append("Errors (first line of the first; every error in full in `logs/<timestamp>/errors.log`):")
        lines += [f"- {r.tool} N={r.n}: {len(r.errors)} of {r.runs} run(s) failed: {one_line(r.errors[0])}"
                  for r in failed]
        lines.append("")
    lines += [
        "Columns: per-site seconds from the site's start (sidecar: just before its app container is started; "
        "caddy: `caddy run` started; certbot: the first `docker run certbot`) until a TLS handshake with its "
        "name as SNI presents a certificate that verifies against this run's Pebble root and `GET /` answers "
        "200; total = from the first start to the last site served. Probes every "
        "max(0.05, min(0.5, N × 5 ms)) s per site, so resolution is 0.05 s for N ≤ 10 and 0.5 s for N = 100. "
        "CPU s and peak MB are the sidecar's container (caddy: the caddy container) during the burst, "
        "from its cgroup: they exclude certbot and nginx. certbot runs: certificate requests made (sidecar: "
        "`docker exec` runs in its one certbot container); certbot containers: containers started for them; "
        "certbot CPU s: the sidecar's certbot container during the burst; certbot exec s: the median certonly "
        "run inside that container, from the engine's exec_start to exec_die (certbot's own time, its start-up "
        "included); nginx CPU s: the nginx container (reloads, `nginx -t`, the sidecar's preflight fetches, and "
        "the benchmark's own probes); CPU s per certificate: sidecar + certbot container + nginx, per site served. "
        "Probes every 2 s per site for N = 1,000. peak MB is the "
        "cgroup's high-water mark since the container started (includes page cache); peak RSS MB is sampled "
        "every 0.25 s. For the certbot baseline no long-running process is measured.",
        "",
        "Conditions: one fresh Pebble per run (`PEBBLE_VA_NOSLEEP=1`, `PEBBLE_AUTHZREUSE=0`, "
        "`PEBBLE_WFE_NONCEREJECT=0`), HTTP-01 only, everything on private Docker networks and 127.0.0.1. "
        + ("Pebble config: the demo's (`retryAfter` authz 3 s, order 5 s)."
           if meta.get("pebble_retry_after", "demo") == "demo" else
           "Pebble config: the demo's without `retryAfter` (`--pebble-retry-after off`)."),
        f"Machine: {meta['machine']}. Other engineers were running tests on the same engine "
        "at the same time, so expect noise.",
        f"Sidecar image {meta['sidecar_image']} ({meta['sidecar_image_id']}, built {meta['sidecar_image_created']}); "
        f"repo {meta['git']}.",
        "",
        "Per run:",
        "",
        "| N | tool | run | served | median s | max s | total s | reloads | certbot runs | certbot containers "
        "| certbot exec s | certbot CPU s | nginx CPU s | CPU s | CPU s per certificate | setup s | error / notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rr in sorted(results, key=lambda x: (x.n, TOOLS.index(x.tool), x.run)):
        t = rr.times
        notes = ([rr.error] if rr.error else []) + [x for x in rr.notes if not x.startswith("resources")]
        lines.append(
            f"| {rr.n} | {rr.tool} | {rr.run} | {rr.served}/{rr.n} | {fmt(statistics.median(t) if t else None)} | "
            f"{fmt(max(t) if t else None)} | {fmt(rr.total_s)} | {fmt(rr.reloads, 0)} | "
            f"{fmt(rr.certbot_runs, 0)} | {fmt(rr.certbot_containers, 0)} | {fmt(rr.certbot_exec_s, 2)} | "
            f"{fmt(rr.certbot_cpu_s)} | {fmt(rr.nginx_cpu_s)} | {fmt(rr.cpu_s)} | {fmt(rr.cpu_per_cert, 2)} | "
            f"{fmt(rr.setup_s)} | {'; '.join(one_line(x, 120) for x in notes)} |")
    lines.append("")
    return "\n".join(lines)


def chart(rows: list[Row], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    sizes = sorted({r.n for r in rows})
    tools = [t for t in TOOLS if any(r.tool == t for r in rows)]
    colors = {"sidecar": "#2b7bba", "sidecar-file": "#7fb3dd", "caddy": "#3aa655", "certbot": "#d9822b"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(tools))
    for ax, attr, title in ((axes[0], "total_s", "all N sites served (s)"),
                            (axes[1], "median_s", "median per-site time (s)")):
        for j, tool in enumerate(tools):
            for i, n in enumerate(sizes):
                row = next((r for r in rows if r.n == n and r.tool == tool), None)
                if row is None:
                    continue
                x = i + (j - (len(tools) - 1) / 2) * width
                v = getattr(row, attr)
                served_all = all(c == str(n) for c in row.served.split(" of ")[0].split("/"))
                if attr == "total_s" and v is None:
                    # Not every site was served within the timeout: a hatched bar up to the timeout.
                    limit = float(meta.get("timeouts", {}).get(str(n)) or row.max_s or 1)
                    ax.bar([x], [limit], width, color=colors.get(tool), alpha=0.35, hatch="//")
                    ax.annotate(f"{row.served.split(' of ')[0]}/{n}\nby {limit:.0f}", (x, limit),
                                ha="center", va="bottom", fontsize=7)
                elif v is not None:
                    ax.bar([x], [v], width, color=colors.get(tool), alpha=1.0 if served_all else 0.5)
                    ax.annotate(f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(sizes)), [f"N={n}" for n in sizes])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 2)
    axes[1].legend(loc="upper left", handles=[Patch(color=colors.get(t), label=t) for t in tools]
                   + [Patch(facecolor="white", edgecolor="grey", hatch="//", label="not all served")],
                   fontsize=8)
    fig.suptitle(f"HTTPS for a burst of N sites, local Pebble ({meta['timestamp']}, {meta['runs']} run(s), "
                 f"{os.cpu_count()} cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 1000],
                    help="values of N (default 1 10 100 1000)")
    ap.add_argument("--container-sizes", type=int, nargs="+", default=[1, 10, 100],
                    help="values of N for the container variant (tool sidecar; default 1 10 100)")
    ap.add_argument("--baseline-max", type=int, default=100,
                    help="largest N for caddy and certbot (default 100: the script needs about 3 s a site); 0: no limit")
    ap.add_argument("--runs", type=int, default=1, help="runs per size and tool; the table shows medians")
    ap.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    ap.add_argument("--sidecar-image", default=None, help="sidecar image (default $SIDECAR_IMAGE or "
                    "local/nginx-acme-sidecar:test); pinned by id for the whole bench")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds to wait for all sites of one run (default 200 + 6 s per site: long enough for Caddy's retries after 60 s and 180 s)")
    ap.add_argument("--idle-seconds", type=float, default=30.0,
                    help="idle CPU window for the sidecar after the largest N is served (0: skip)")
    ap.add_argument("--pebble-retry-after", choices=("demo", "off"), default="demo",
                    help="demo: Pebble's config as in the local demo (retryAfter authz 3 s, order 5 s); "
                    "off: the same config without retryAfter, for every tool (Caddy 2.6.2 cannot parse "
                    "the Retry-After Pebble then sends while an order is processing)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--no-latest", action="store_true", help="do not update latest.md / latest.png")
    ap.add_argument("--replot", type=Path, nargs="+", metavar="RESULTS.json",
                    help="only redraw the chart and table of an earlier run (writes <name>.png and <name>.md); "
                    "several: merge their runs into the first one's name with -merged (e.g. the baselines "
                    "run once at N = 100, the sidecar three times)")
    args = ap.parse_args(argv)
    if args.replot:
        parts = [json.loads(p.read_text()) for p in args.replot]
        data = parts[0]
        runs = [RunResult(**r) for part in parts for r in part["runs"]]
        target = args.replot[0]
        if len(parts) > 1:
            target = target.with_name(target.stem + "-merged.json")
            meta = data["meta"]
            meta["sizes"] = sorted({n for part in parts for n in part["meta"]["sizes"]})
            meta["container_sizes"] = sorted({n for part in parts for n in part["meta"].get("container_sizes", [])})
            meta["tools"] = [t for t in TOOLS if any(t in part["meta"]["tools"] for part in parts)]
            meta["runs"] = max(part["meta"]["runs"] for part in parts)
            meta["elapsed_s"] = sum(part["meta"]["elapsed_s"] for part in parts)
            meta["merged_from"] = [p.name for p in args.replot]
            for part in parts[1:]:
                meta.setdefault("timeouts", {}).update(part["meta"].get("timeouts", {}))
            data["rows"] = [asdict(r) for r in aggregate(runs)]
            data["runs"] = [asdict(r) for r in runs]
            target.write_text(json.dumps(data, indent=1) + "\n")
        rows = [Row(**r) for r in data["rows"]]
        data["meta"].setdefault("timeouts", {str(n): args.timeout or 200 + 6 * n for n in data["meta"]["sizes"]})
        data["meta"].setdefault("baseline_max", 0)
        target.with_suffix(".md").write_text(markdown(rows, runs, data["meta"]))
        chart(rows, target.with_suffix(".png"), data["meta"])
        return 0
    if "sidecar" in args.tools and "--sizes" in (argv or sys.argv) and "--container-sizes" not in (argv or sys.argv):
        args.container_sizes = [n for n in args.sizes if n <= 100]  # an explicit --sizes applies to both variants
    if any(n < 1 for n in args.sizes + args.container_sizes) or args.runs < 1:
        ap.error("sizes and runs must be positive")

    global PEBBLE_TEMPLATE_OVERRIDE
    if args.pebble_retry_after == "off":
        PEBBLE_TEMPLATE_OVERRIDE = pebble_template_without_retry_after(Path(tempfile.mkdtemp(prefix="bench-pebble-")))
    images = _env_images()
    if args.sidecar_image:
        images["SIDECAR_IMAGE"] = args.sidecar_image
    client = docker.from_env(max_pool_size=max(args.sizes) + 20, timeout=300)
    client.ping()
    needed = {"sidecar": ["NGINX_IMAGE", "CERTBOT_IMAGE", "APP_IMAGE", "PEBBLE_IMAGE", "SIDECAR_IMAGE"],
              "sidecar-file": ["NGINX_IMAGE", "CERTBOT_IMAGE", "APP_IMAGE", "PEBBLE_IMAGE", "SIDECAR_IMAGE"],
              "caddy": ["APP_IMAGE", "PEBBLE_IMAGE", "CADDY_IMAGE"],
              "certbot": ["NGINX_IMAGE", "CERTBOT_IMAGE", "APP_IMAGE", "PEBBLE_IMAGE"]}
    missing = sorted({images[k] for t in args.tools for k in needed[t] if not client.images.list(name=images[k])})
    if missing:
        print(f"images missing: {', '.join(missing)} (run bash tests/build-images.sh [caddy])", file=sys.stderr)
        return 2

    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    logdir = args.out / "logs" / ts
    logdir.mkdir(parents=True, exist_ok=True)

    # Pin the sidecar image: others may rebuild the tag while the bench runs.
    side = client.images.get(images["SIDECAR_IMAGE"])
    pin_repo, pin_tag = "local/nginx-acme-sidecar", f"bench-{ts.lower()}"
    pinned = "sidecar" in args.tools or "sidecar-file" in args.tools
    if pinned:
        side.tag(pin_repo, pin_tag)
        images_run = {**images, "SIDECAR_IMAGE": f"{pin_repo}:{pin_tag}"}
    else:
        images_run = images
    meta: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": sorted(set(args.sizes) | (set(args.container_sizes) if "sidecar" in args.tools else set())),
        "container_sizes": args.container_sizes, "baseline_max": args.baseline_max,
        "runs": args.runs, "tools": args.tools, "idle_seconds": args.idle_seconds,
        "certbot_launcher": os.environ.get("CERTBOT_LAUNCHER", "(image default)"),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                   f"Docker {client.version().get('Version')}, "
                   f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM",
        "sidecar_image": images["SIDECAR_IMAGE"], "sidecar_image_id": side.short_id,
        "sidecar_image_created": side.attrs.get("Created", "")[:19].replace("T", " "),
        "git": git_info(), "images": images, "pebble_retry_after": args.pebble_retry_after,
    }
    log(f"sidecar image {images['SIDECAR_IMAGE']} = {side.short_id}; results in {args.out}")

    sidecar_b = SidecarBench(client, images_run, logdir)
    caddy_b = CaddyBench(client, images_run, logdir)
    certbot_b = CertbotBench(client, images_run, logdir)
    results: list[RunResult] = []
    start = time.monotonic()
    largest = max(args.sizes)
    try:
        for k in range(1, args.runs + 1):
            for n in meta["sizes"]:
                timeout = args.timeout or 200 + 6 * n
                for tool in [t for t in TOOLS if t in args.tools]:
                    if tool == "sidecar" and n not in args.container_sizes or \
                            tool != "sidecar" and n not in args.sizes:
                        continue
                    if tool in ("caddy", "certbot") and args.baseline_max and n > args.baseline_max:
                        continue
                    if tool in ("sidecar", "sidecar-file"):
                        last = (n == largest if tool == "sidecar-file" else
                                "sidecar-file" not in args.tools and n == max(args.container_sizes))
                        idle = args.idle_seconds if last else 0.0
                        results.append(sidecar_b.run(n, k, timeout, idle, declared=tool == "sidecar-file"))
                    elif tool == "caddy":
                        results.append(caddy_b.run(n, k, timeout))
                    else:
                        results.append(certbot_b.run(n, k, timeout))
    except KeyboardInterrupt:
        log("interrupted: writing what was measured so far")
    finally:
        if pinned:
            try:
                client.images.remove(f"{pin_repo}:{pin_tag}", noprune=True)
            except docker.errors.APIError:
                pass
    if PEBBLE_TEMPLATE_OVERRIDE is not None:
        shutil.rmtree(PEBBLE_TEMPLATE_OVERRIDE.parent, ignore_errors=True)
    meta["elapsed_s"] = time.monotonic() - start
    meta["timeouts"] = {str(n): args.timeout or 200 + 6 * n for n in meta["sizes"]}
    rows = aggregate(results)
    with open(logdir / "errors.log", "w") as errlog:
        for rr in results:
            for text in ([rr.error] if rr.error else []) + rr.notes:
                errlog.write(f"{rr.tool} N={rr.n} run {rr.run}: {text}\n")
    md = markdown(rows, results, meta)
    (args.out / f"{ts}.md").write_text(md)
    (args.out / f"{ts}.json").write_text(json.dumps(
        {"meta": meta, "rows": [asdict(r) for r in rows], "runs": [asdict(r) for r in results]}, indent=1) + "\n")
    png = args.out / f"{ts}.png"
    try:
        chart(rows, png, meta)
    except ImportError:
        log("matplotlib missing: no chart (pip install -e '.[bench]')")
    if not args.no_latest:
        (args.out / "latest.md").write_text(md)
        if png.exists():
            shutil.copyfile(png, args.out / "latest.png")
    print(md)
    log(f"done in {meta['elapsed_s']:.0f}s: {args.out / (ts + '.md')}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
