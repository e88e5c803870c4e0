#!/usr/bin/env python3
"""Benchmark: what keep-alive clients see while the sidecar changes sites and rotates certificates.

A graceful ``nginx -s reload`` lets requests in flight finish on the old workers, but those
workers close every keep-alive connection they hold: an idle one at once, a busy one right after
its response, whose headers still said ``keep-alive``. A client that sends its next request on
such a connection at that moment gets no answer. This script counts, per kind of change and per
reload, how often that happens, on the local demo stack (Pebble, nginx, the sidecar) with load on
https://a.demo.test/ from inside the stack's network:

- ``wrk keep-alive``: wrk, 8 keep-alive connections at full speed (the issue's measurement). wrk
  counts every connection nginx closes as a socket read error, whether or not a request was on it.
- ``wrk close``: wrk with ``Connection: close`` (a new TLS connection per request): must stay 0.
- ``probe``: 8 keep-alive connections at full speed from a small Python client that does what
  urllib3 (Python ``requests``) does before reusing a pooled connection: if nginx already closed
  it, reconnect silently. ``lost`` counts requests written on a reused connection that got no
  answer: a GET a client may retry, a POST it must not. ``closed idle`` counts the silent reconnects.
- ``probe paced``: the same with each connection idle for ``--pace`` seconds between requests
  (an API client's pool), which is what ``keepalive_timeout`` acts on.

Kinds of change (``--changes`` of each, one at a time, each waited for; nothing contacts the Internet):

- ``add``:      a new container labelled ``acme.domains=kaN.keepalive.test``, until the reload that
                writes its site file and the name served over TLS;
- ``remove``:   those containers removed one by one, until the reload that removes the file and the
                name refused;
- ``renew``:    ``python3 -m sidecar renew b.demo.test --force`` in the sidecar container, until the
                reload that writes b.demo.test's file (the loaded site, a.demo.test, is untouched; the
                served serial alone would not do: right after a reload an old worker may still answer);
- ``touch``:    the sites file rewritten with the same sites (a change nginx's config does not see);
- ``restart``:  the sidecar container restarted (``--restarts`` times; nothing changes for nginx);
- ``add-burst`` / ``remove-burst``: ``--changes`` sites started at once, then removed at once
                (reloads batched by ``RELOAD_INTERVAL`` and the debounce);
- ``quiet``:    ``--quiet-seconds`` with no change at all (the floor: must be 0).

Reloads are the sidecar's ``reload`` events (``GET /events``). Options tune stock nginx
(``--nginx keepalive_timeout=1s``, set in the nginx container's nginx.conf) or the sidecar
(``--reload-interval``) to measure what they change.

Usage: .venv/bin/python bench/keepalive.py [--changes 10] [--kinds ...] [--nginx DIRECTIVE=VALUE]
Results: bench/results/keepalive-<timestamp>.{md,json}, bench/results/keepalive-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 - the shared plumbing of bench/run.py (it puts the repo root on sys.path)
from tests.support.net import free_port, http_get, tls_context, tls_get, wait_for  # noqa: E402

KINDS = ("quiet", "add", "remove", "renew", "touch", "restart", "add-burst", "remove-burst")
DOMAIN = "keepalive.test"
TARGET = "a.demo.test"      # the site under load
RENEWED = "b.demo.test"     # the site whose certificate is rotated
WRK_IMAGE = os.environ.get("WRK_IMAGE", "local/wrk:test")
LOADERS = ("wrk_keepalive", "wrk_close", "probe", "probe_paced")
SITES = "sites:\n  - domains: [static.demo.test]\n    upstream: http://app-b:5678\n"

# The probe client, run with python3 in a container of the sidecar image on the stack's network.
# argv: host ip connections pace_seconds; env ROOT_PEM. SIGINT: stop and print the counts as JSON.
PROBE = r'''
import http.client, json, os, select, signal, socket, ssl, sys, threading, time
host, ip, conns, pace = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ctx = ssl.create_default_context(cadata=os.environ["ROOT_PEM"])
stop, lock = threading.Event(), threading.Lock()
c = {"ok": 0, "other_status": 0, "lost": 0, "failed_fresh": 0, "closed_idle": 0, "connects": 0,
     "connect_errors": 0, "close_header": 0, "lost_by": {}}
REQ = ("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: keepalive-probe\r\n\r\n" % host).encode()

def add(k, n=1):
    with lock:
        c[k] += n

def dropped(s):
    # urllib3's check before reusing a pooled connection: readable while idle means closed.
    if not s.pending() and not select.select([s], [], [], 0)[0]:
        return False
    s.setblocking(False)
    try:
        s.recv(1)                         # EOF, or data on an idle HTTP/1.1 connection: unusable
    except ssl.SSLWantReadError:
        return False                      # a TLS record (session ticket), no data
    except OSError:
        pass
    finally:
        s.settimeout(5)
    return True

def worker():
    s = None
    while not stop.is_set():
        reused = s is not None
        if reused and dropped(s):
            add("closed_idle"); s.close(); s, reused = None, False
        if s is None:
            try:
                s = ctx.wrap_socket(socket.create_connection((ip, 443), 5), server_hostname=host)
                add("connects")
            except OSError:
                add("connect_errors"); s = None; stop.wait(0.05); continue
        try:
            s.sendall(REQ)
            r = http.client.HTTPResponse(s)
            r.begin()
            r.read()
        except (OSError, http.client.HTTPException) as e:
            if reused:
                with lock:
                    c["lost"] += 1
                    c["lost_by"][type(e).__name__] = c["lost_by"].get(type(e).__name__, 0) + 1
            else:
                add("failed_fresh")
            s.close(); s = None
            continue
        add("ok" if r.status == 200 else "other_status")
        if r.will_close:
            add("close_header"); s.close(); s = None
        if pace:
            stop.wait(pace)

signal.signal(signal.SIGINT, lambda *_: stop.set())
signal.signal(signal.SIGTERM, lambda *_: stop.set())
threads = [threading.Thread(target=worker) for _ in range(conns)]
for t in threads:
    t.start()
print("started", flush=True)
stop.wait()
for t in threads:
    t.join(10)
print(json.dumps(c), flush=True)
'''


def log(msg: str) -> None:
    bench.log(msg)


# -- results -------------------------------------------------------------------------------------

@dataclass
class Phase:
    kind: str
    changes: int = 0
    reloads: int = 0
    seconds: float = 0.0
    load: dict[str, dict[str, Any]] = field(default_factory=dict)  # loader -> its counts
    error: str | None = None


@dataclass
class Result:
    settings: dict[str, str]
    phases: list[Phase] = field(default_factory=list)
    error: str | None = None


def wrk_counts(output: str) -> dict[str, Any]:
    """wrk's summary (with /etc/wrk/status.lua): requests, statuses, socket errors by kind."""
    requests = re.search(r"(\d+) requests in", output)
    status = re.search(r"status 200: (\d+), other: (\d+)", output)
    line = output.split("Socket errors:", 1)[1].splitlines()[0] if "Socket errors:" in output else ""
    errors = {k: int(v) for k, v in re.findall(r"(connect|read|write|timeout) (\d+)", line)}
    if not requests or not status:
        raise RuntimeError(f"wrk printed no summary: {output[-500:]!r}")
    return {"requests": int(requests.group(1)), "status_200": int(status.group(1)),
            "other_status": int(status.group(2)), "socket_errors": sum(errors.values()), "by_kind": errors}


# -- the stack -----------------------------------------------------------------------------------

class Stack:
    """The local demo under a fresh Compose project, its event log, the load containers."""

    def __init__(self, client: docker.DockerClient, images: dict[str, str], settings: dict[str, str]) -> None:
        self.client = client
        self.images = images
        self.project = "keepalive" + uuid.uuid4().hex[:8]
        self.network = f"{self.project}-net"
        self.sites_dir = Path(tempfile.mkdtemp(prefix=f"{self.project}-sites-"))
        (self.sites_dir / "sites.yml").write_text(SITES)
        os.chmod(self.sites_dir, 0o755)
        os.chmod(self.sites_dir / "sites.yml", 0o644)
        self.https_port, self.status_port, self.mgmt_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ, **{k: v for k, v in images.items() if k != "CADDY_IMAGE"},
            "HTTP_PORT": str(free_port()), "HTTPS_PORT": str(self.https_port),
            "PEBBLE_MGMT_PORT": str(self.mgmt_port), "STATUS_PORT_HOST": str(self.status_port),
            "DEMO_NETWORK": self.network, "SITES_DIR": str(self.sites_dir),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info"),
            "BENCH_NGINX_CONTAINER": f"{self.project}-nginx-1", "BENCH_PEBBLE_TEMPLATE": "",
            **settings,
        }
        self.root = ""
        self.ctx: Any = None
        self.seen: dict[str, int] = {}  # sidecar process (its start time) -> events read from it
        self.history: list[dict[str, Any]] = []  # every event read, across sidecar restarts
        self.apps: dict[str, Any] = {}

    def compose(self, *args: str, check: bool = True) -> None:
        files = [bench.DEMO / "compose.yml", bench.ROOT / "bench" / "compose.bench.yml"]
        cmd = ["docker", "compose", "-p", self.project, *[a for f in files for a in ("-f", str(f))], *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    def service(self, name: str) -> Any:
        found = self.client.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.project}", f"com.docker.compose.service={name}"]})
        if not found:
            raise RuntimeError(f"no container for service {name}")
        return found[0]

    def exec(self, service: str, *cmd: str) -> str:
        code, out = self.service(service).exec_run(list(cmd))
        text = out.decode("utf-8", "replace")
        if code != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {service} failed ({code}): {text[-500:]}")
        return text

    def up(self, nginx: dict[str, str]) -> None:
        self.compose("up", "-d", "--no-build", "--pull", "never")
        ca = wait_for("Pebble's CA", lambda: self.exec("pebble", "cat", "/pebble-ca/ca.pem"), timeout=90,
                      interval=0.5)
        self.root = wait_for("Pebble's root", lambda: bench.pebble_root(self.mgmt_port, ca), timeout=60,
                             interval=0.5)
        self.ctx = tls_context(self.root)
        for host in (TARGET, RENEWED, "static.demo.test"):
            wait_for(f"https://{host}", lambda h=host: self.served(h), timeout=120, interval=0.3)
        if nginx:
            self.tune_nginx(nginx)
        self.reloads()  # (reads the events so far)

    def tune_nginx(self, directives: dict[str, str]) -> None:
        """Set http-level directives in the nginx container's nginx.conf (replace, or add before the
        conf.d include), then test and reload: what an operator of stock nginx can do."""
        script = []
        for name, value in directives.items():
            script.append(f"if grep -qE '^\\s*{name}\\s' /etc/nginx/nginx.conf; then "
                          f"sed -i -E 's|^(\\s*){name}\\s.*|\\1{name} {value};|' /etc/nginx/nginx.conf; else "
                          f"sed -i -E 's|^(\\s*)include /etc/nginx/conf.d/\\*.conf;|\\1{name} {value};\\n&|' "
                          f"/etc/nginx/nginx.conf; fi")
        self.exec("nginx", "sh", "-c", " && ".join(script) + " && nginx -t 2>&1 && nginx -s reload")
        for name, value in directives.items():
            assert f"{name} {value};" in self.exec("nginx", "cat", "/etc/nginx/nginx.conf"), (name, value)

    def served(self, host: str) -> bool:
        try:
            return tls_get(self.https_port, host, "/", self.ctx, timeout=3).status == 200
        except OSError:
            return False

    def events(self) -> list[dict[str, Any]]:
        """New events of the running sidecar process since the last call (a restarted one counts from 1)."""
        status, _, body = http_get(self.status_port, "127.0.0.1", "/events?since=0", timeout=5)
        if status != 200:
            raise RuntimeError(f"/events answered {status}")
        doc = json.loads(body)
        if doc["missed"]:
            raise RuntimeError(f"{doc['missed']} events dropped before they were read")
        read = self.seen.get(doc["started"], 0)
        self.seen[doc["started"]] = doc["next"]
        return [e for e in doc["events"] if e["seq"] > read]

    def reloads(self) -> int:
        """Reloads so far, across sidecar restarts (events read before each restart)."""
        self.history += self.events()
        return sum(e["kind"] == "reload" for e in self.history)

    def wait_reload(self, files: set[str], key: str, since: int, timeout: float = 90.0) -> None:
        """Until ``reload`` events after history entry ``since`` have ``files`` in their ``key``
        (``written`` or ``removed``): the change reached nginx and its event is counted."""
        def done() -> bool:
            self.reloads()
            seen = {f for e in self.history[since:] if e["kind"] == "reload" for f in e["details"].get(key, [])}
            return files <= seen
        wait_for(f"a reload that {key} {', '.join(sorted(files))}", done, timeout=timeout, interval=0.1)

    def process(self) -> str:
        _, _, body = http_get(self.status_port, "127.0.0.1", "/events?since=0", timeout=5)
        return str(json.loads(body)["started"])

    def pass_after(self, when: dt.datetime) -> bool:
        status, _, body = http_get(self.status_port, "127.0.0.1", "/status", timeout=5)
        updated = json.loads(body).get("updated") if status == 200 else None
        return bool(updated and dt.datetime.fromisoformat(updated) > when)

    def nginx_ip(self) -> str:
        nets = self.service("nginx").attrs["NetworkSettings"]["Networks"]
        return str(nets[self.network]["IPAddress"])

    def run(self, image: str, command: list[str], name: str, **kw: Any) -> Any:
        return self.client.containers.run(image, command, name=f"{self.project}-{name}", network=self.network,
                                          labels={bench.RUN_LABEL: self.project, **kw.pop("labels", {})},
                                          detach=True, **kw)

    def app(self, name: str) -> Any:
        c = self.run(self.images["APP_IMAGE"], ["-listen=:5678", f"-text=hello from {name}"], name.split(".")[0],
                     labels={"acme.domains": name, "acme.port": "5678"})
        self.apps[name] = c
        return c

    def down(self, logdir: Path) -> None:
        try:
            (logdir / f"{self.project}-sidecar.log").write_bytes(self.service("sidecar").logs())
        except Exception:  # noqa: BLE001 - diagnostics only
            pass
        bench.remove_run_containers(self.client, self.project)
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
        shutil.rmtree(self.sites_dir, ignore_errors=True)


# -- load -------------------------------------------------------------------------------------------

class Load:
    """The four load generators against TARGET, each in a container on the stack's network."""

    def __init__(self, st: Stack, connections: int, pace: float, cpus: float) -> None:
        self.st = st
        ip = st.nginx_ip()
        hosts = {TARGET: ip}
        url = f"https://{TARGET}/"
        wrk = ["-t2", f"-c{connections}", "-d3600s", "--timeout", "5s", "-s", "/etc/wrk/status.lua"]
        tag = uuid.uuid4().hex[:6]
        common: dict[str, Any] = {"extra_hosts": hosts, "nano_cpus": int(cpus * 1e9)}
        self.containers = {
            "wrk_keepalive": st.run(WRK_IMAGE, [*wrk, url], f"wrk-ka-{tag}", **common),
            "wrk_close": st.run(WRK_IMAGE, [*wrk, "-H", "Connection: close", url], f"wrk-close-{tag}", **common),
        }
        probe_env = {"ROOT_PEM": st.root}
        for name, p in (("probe", 0.0), ("probe_paced", pace)):
            self.containers[name] = st.run(
                st.images["SIDECAR_IMAGE"], ["-c", PROBE, TARGET, ip, str(connections), str(p)],
                f"{name.replace('_', '-')}-{tag}", entrypoint="python3", environment=probe_env, **common)
        for name in ("probe", "probe_paced"):
            c = self.containers[name]
            wait_for(f"{name} started", lambda c=c: b"started" in c.logs(), timeout=30, interval=0.1)

    def stop(self) -> dict[str, dict[str, Any]]:
        for c in self.containers.values():
            try:
                c.kill(signal="SIGINT")
            except docker.errors.APIError:
                pass
        out: dict[str, dict[str, Any]] = {}
        for name, c in self.containers.items():
            c.wait(timeout=60)
            text = c.logs().decode("utf-8", "replace")
            if name.startswith("wrk"):
                out[name] = wrk_counts(text)
            else:
                last = [ln for ln in text.splitlines() if ln.startswith("{")]
                if not last:
                    raise RuntimeError(f"{name} printed no counts: {text[-500:]!r}")
                counts = json.loads(last[-1])
                counts["requests"] = counts["ok"] + counts["other_status"]
                out[name] = counts
            c.remove(force=True)
        return out


# -- the kinds of change ------------------------------------------------------------------------------

def refused(st: Stack, host: str) -> bool:
    """The catch-all refuses the handshake for a name no site serves."""
    try:
        tls_get(st.https_port, host, "/", st.ctx, timeout=3)
    except ssl.SSLError:
        return True
    except OSError:
        return False
    return False


def site_file(name: str) -> str:
    return f"sidecar-site-{name}.conf"  # (sidecar.core.names.site_filename)


def change(st: Stack, kind: str, n: int, args: argparse.Namespace, names: list[str]) -> int:
    """Make ``n`` changes of ``kind`` (each waited for); returns how many were made."""
    timeout = 90.0
    if kind == "quiet":
        time.sleep(args.quiet_seconds)  # (the phase is a fixed window by definition)
        return 0
    if kind == "add":
        for name in names[:n]:
            since = len(st.history)
            st.app(name)
            st.wait_reload({site_file(name)}, "written", since, timeout)
            wait_for(f"{name} served", lambda nm=name: st.served(nm), timeout=timeout, interval=0.2)
        return n
    if kind == "remove":
        for name in names[:n]:
            since = len(st.history)
            st.apps.pop(name).remove(force=True)
            st.wait_reload({site_file(name)}, "removed", since, timeout)
            wait_for(f"{name} refused", lambda nm=name: refused(st, nm), timeout=timeout, interval=0.2)
        return n
    if kind == "renew":
        for _ in range(n):
            since = len(st.history)
            st.exec("sidecar", "python3", "-m", "sidecar", "renew", RENEWED, "--force")
            # (not the served serial alone: right after a reload an old worker may still answer)
            st.wait_reload({site_file(RENEWED)}, "written", since, timeout)
        return n
    if kind == "touch":
        for i in range(n):
            when = dt.datetime.now(dt.timezone.utc)
            tmp = st.sites_dir / ".sites.yml.tmp"
            tmp.write_text(SITES + f"# rewritten {i}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, st.sites_dir / "sites.yml")
            wait_for("a pass after the rewrite", lambda w=when: st.pass_after(w), timeout=timeout, interval=0.2)
        return n
    if kind == "restart":
        for _ in range(args.restarts):
            st.reloads()  # read the stopping process's events first
            before = st.process()
            st.service("sidecar").restart(timeout=10)
            wait_for("the restarted sidecar", lambda b=before: st.process() != b, timeout=timeout, interval=0.3)
            when = dt.datetime.now(dt.timezone.utc)
            wait_for("its first pass", lambda w=when: st.pass_after(w), timeout=timeout, interval=0.3)
        return args.restarts
    if kind == "add-burst":
        since = len(st.history)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(st.app, names[:n]))
        st.wait_reload({site_file(nm) for nm in names[:n]}, "written", since, timeout + 6 * n)
        for name in names[:n]:
            wait_for(f"{name} served", lambda nm=name: st.served(nm), timeout=timeout, interval=0.3)
        return n
    if kind == "remove-burst":
        since = len(st.history)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda nm: st.apps.pop(nm).remove(force=True), names[:n]))
        st.wait_reload({site_file(nm) for nm in names[:n]}, "removed", since, timeout)
        for name in names[:n]:
            wait_for(f"{name} refused", lambda nm=name: refused(st, nm), timeout=timeout, interval=0.2)
        return n
    raise ValueError(kind)


def one_run(client: docker.DockerClient, images: dict[str, str], args: argparse.Namespace, logdir: Path) -> Result:
    settings = {"RELOAD_INTERVAL": str(args.reload_interval)} if args.reload_interval is not None else {}
    res = Result({**settings, **{f"nginx {k}": v for k, v in args.nginx.items()}})
    st = Stack(client, images, settings)
    try:
        log(f"keep-alive: compose up {st.project}")
        st.up(args.nginx)
        for i, kind in enumerate(args.kinds):
            names = [f"ka{i}x{j}.{DOMAIN}" for j in range(args.changes)]
            if kind in ("remove", "remove-burst"):
                # remove what the add phase before it added (or add them now, unloaded)
                names = [n for n in st.apps][: args.changes]
                if len(names) < args.changes:
                    extra = [f"ka{i}y{j}.{DOMAIN}" for j in range(args.changes - len(names))]
                    for name in extra:
                        st.app(name)
                    for name in extra:
                        wait_for(f"{name} served", lambda nm=name: st.served(nm), timeout=120, interval=0.3)
                    names += extra
            phase = Phase(kind)
            log(f"keep-alive: {kind}: load on, {args.changes if kind != 'restart' else args.restarts} change(s)")
            load = Load(st, args.connections, args.pace, args.cpus)
            before = st.reloads()
            t0 = time.monotonic()
            try:
                phase.changes = change(st, kind, args.changes, args, names)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                phase.error = f"{type(exc).__name__}: {exc}"
                log(f"keep-alive: {kind}: ERROR {phase.error}")
            finally:
                phase.seconds = round(time.monotonic() - t0, 1)
                phase.load = load.stop()
                phase.reloads = st.reloads() - before
            res.phases.append(phase)
            k = phase.load["wrk_keepalive"]
            log(f"keep-alive: {kind}: {phase.changes} change(s), {phase.reloads} reload(s), wrk keep-alive "
                f"{k['socket_errors']} socket errors in {k['requests']} requests; probe lost "
                f"{phase.load['probe']['lost']}")
    except Exception as exc:  # noqa: BLE001
        res.error = f"{type(exc).__name__}: {exc}"
        log(f"keep-alive: ERROR {res.error}")
    finally:
        st.down(logdir)
    return res


# -- report ---------------------------------------------------------------------------------------------

def per(a: float, b: float) -> str:
    return "–" if not b else f"{a / b:.1f}"


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [f"# Keep-alive connections across nginx reloads, {meta['timestamp']}", ""]
    for r in results:
        title = ", ".join(f"{k}={v}" for k, v in r.settings.items()) or "defaults"
        lines += [f"## {title}", ""]
        if r.error:
            lines += [f"Error: {r.error}", ""]
        lines += [
            "| change | changes | reloads | s | wrk keep-alive requests | wrk socket errors | per reload "
            "| per change | wrk close errors | probe requests | probe lost | lost per reload | probe closed idle "
            "| paced requests | paced lost | paced closed idle | paced connects |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in r.phases:
            k, c = p.load.get("wrk_keepalive", {}), p.load.get("wrk_close", {})
            pr, pp = p.load.get("probe", {}), p.load.get("probe_paced", {})
            e = k.get("socket_errors", 0)
            lines.append(
                f"| {p.kind}{' (' + p.error + ')' if p.error else ''} | {p.changes} | {p.reloads} | {p.seconds:.0f} "
                f"| {k.get('requests', '–')} | {e} | {per(e, p.reloads)} | {per(e, p.changes)} "
                f"| {c.get('socket_errors', '–')} | {pr.get('requests', '–')} | {pr.get('lost', '–')} "
                f"| {per(pr.get('lost', 0), p.reloads)} | {pr.get('closed_idle', '–')} | {pp.get('requests', '–')} "
                f"| {pp.get('lost', '–')} | {pp.get('closed_idle', '–')} | {pp.get('connects', '–')} |")
        lines.append("")
        bad = [(p.kind, name, v) for p in r.phases for name, v in p.load.items()
               if v.get("other_status") or v.get("failed_fresh") or v.get("connect_errors")]
        for kind, name, v in bad:
            lines.append(f"- {kind}, {name}: other statuses {v.get('other_status', 0)}, failed fresh connections "
                         f"{v.get('failed_fresh', 0)}, connect errors {v.get('connect_errors', 0)}")
        if bad:
            lines.append("")
    lines += [
        f"Load on https://{TARGET}/ from containers on the stack's network (each limited to "
        f"{meta['cpus']} CPU), {meta['connections']} connections each: **wrk keep-alive** (socket errors: "
        "wrk counts every connection closed under it, idle or not), **wrk close** (`Connection: close`, "
        "a TLS handshake per request), **probe** (Python, full speed; before reusing a connection it checks "
        "whether nginx closed it, as urllib3 does, and reconnects: *closed idle*; *lost* = a request written on "
        "a reused connection that got no answer, what fails a POST), **paced** (the probe with "
        f"{meta['pace']} s idle between requests on each connection; *connects* = TLS handshakes). "
        "Reloads: the sidecar's `reload` events. Changes one at a time, each waited for (the `reload` event "
        "that wrote or removed the site's file, then the site served or refused; for `touch` a finished pass; "
        "for `restart` the new process's first pass); bursts all at once, waited for the same way.",
        "",
        f"Machine: {meta['machine']}; nginx {meta['nginx']}. Sidecar image {meta['sidecar_image']} "
        f"({meta['sidecar_image_id']}); repo {meta['git']}. Other tests may share the engine.",
        "",
    ]
    return "\n".join(lines)


def directive(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+", name) or not re.fullmatch(r"[\w.]+", value):
        raise argparse.ArgumentTypeError("DIRECTIVE=VALUE, e.g. keepalive_timeout=5s")
    return name, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=10, help="changes of each kind (default 10)")
    ap.add_argument("--restarts", type=int, default=3, help="sidecar restarts for the restart kind (default 3)")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--pace", type=float, default=2.0, help="seconds between requests of the paced probe")
    ap.add_argument("--cpus", type=float, default=0.4, help="CPU limit of each load container")
    ap.add_argument("--quiet-seconds", type=float, default=15.0)
    ap.add_argument("--reload-interval", type=int, default=None, help="the sidecar's RELOAD_INTERVAL")
    ap.add_argument("--nginx", type=directive, action="append", default=[],
                    help="an http-level directive for nginx.conf, e.g. keepalive_timeout=5s (repeatable)")
    ap.add_argument("--out", type=Path, default=bench.RESULTS)
    ap.add_argument("--no-latest", action="store_true")
    args = ap.parse_args(argv)
    args.nginx = dict(args.nginx)
    images = bench._env_images()
    client = docker.from_env(timeout=300)
    for img in (WRK_IMAGE, *[v for k, v in images.items() if k != "CADDY_IMAGE"]):
        client.images.get(img)  # (missing: bash tests/build-images.sh)
    side = client.images.get(images["SIDECAR_IMAGE"])
    images["SIDECAR_IMAGE"] = side.id  # pinned for the whole run
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logdir = args.out / "logs" / f"keepalive-{ts}"
    logdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results = [one_run(client, images, args, logdir)]
    version = client.containers.run(images["NGINX_IMAGE"], ["nginx", "-v"], remove=True, stdout=True, stderr=True)
    meta = {
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Docker {client.version().get('Version')}",
        "nginx": version.decode().strip().removeprefix("nginx version: "),
        "sidecar_image": os.environ.get("SIDECAR_IMAGE") or bench._env_images()["SIDECAR_IMAGE"],
        "sidecar_image_id": side.short_id, "git": bench.git_info(), "connections": args.connections,
        "pace": args.pace, "cpus": args.cpus, "changes": args.changes, "elapsed_s": round(time.monotonic() - t0),
    }
    md = markdown(results, meta)
    (args.out / f"keepalive-{ts}.md").write_text(md)
    (args.out / f"keepalive-{ts}.json").write_text(json.dumps(
        {"meta": meta, "args": {k: v for k, v in vars(args).items() if k != "out"},
         "runs": [asdict(r) for r in results]}, indent=1, default=str) + "\n")
    if not args.no_latest:
        (args.out / "keepalive-latest.md").write_text(md)
    print(md)
    return 1 if any(r.error or any(p.error for p in r.phases) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
