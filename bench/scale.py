#!/usr/bin/env python3
"""Benchmark: ten thousand sites (issue 17, part 3).

The local demo stack (Pebble, nginx) with one app container and a sites file of N sites
(default 10,000), each with a certbot lineage on disk (valid ECDSA certificate from a
throw-away CA, see bench/startup.py). With ``--group G`` the same N names go into N/G
sites-file entries of G names each, so nginx loads N/G certificates (SAN grouping).

Measured per run, in this order:
- first start (writes every vhost) and a restart (all in place): seconds from the
  container's start until every site was planned and until the first pass was done;
  certificate requests and certbot runs (both must be 0);
- the sidecar idle: CPU % of one core and resident memory (anon, from its cgroup);
- nginx: resident memory (anon of its container, the master's VmRSS), `nginx -t`,
  SIGHUP to the master until the first new worker runs, `nginx -s reload`'s own time;
- `/status`, `/plan`, `/metrics`: seconds to answer (and bytes);
- one site added to the sites file: seconds until it is served over HTTPS with a Pebble
  certificate, split into the sidecar's part (noticed -> certbot started, certbot done
  -> reload done) and certbot's run (from ``/events``).

Usage: bench/scale.sh [--sites 10000] [--group 1] [--runs 1]
Results: bench/results/scale-<timestamp>.{md,json} and scale-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 - the shared plumbing of bench/run.py (it puts the repo root on sys.path)
import startup  # noqa: E402 - lineages_tar, measure_start
from tests.support.net import free_port, tls_context, wait_for  # noqa: E402

DOMAIN = "scale.test"


@dataclass
class Result:
    sites: int
    group: int
    run: int
    generate_s: float = 0.0
    starts: list[dict[str, Any]] = field(default_factory=list)
    idle_cpu_pct: float | None = None
    idle_rss_mb: float | None = None
    idle_seconds: float | None = None
    nginx_anon_mb: float | None = None
    nginx_master_rss_mb: float | None = None
    nginx_workers: int | None = None
    nginx_t_s: float | None = None
    nginx_hup_s: float | None = None
    nginx_s_reload_s: float | None = None
    endpoints: dict[str, dict[str, float]] = field(default_factory=dict)
    ondisk_served_s: float | None = None
    ondisk_noticed_s: float | None = None
    ondisk_reload_event_s: float | None = None
    ondisk_events: list[str] = field(default_factory=list)
    add_served_s: float | None = None
    add_noticed_to_certbot_s: float | None = None
    add_certbot_s: float | None = None
    add_issued_to_reload_s: float | None = None
    add_reload_to_served_s: float | None = None
    add_sidecar_s: float | None = None
    add_events: list[str] = field(default_factory=list)
    error: str | None = None


def sites_yaml(groups: list[list[str]], upstream: str) -> str:
    return "sites:\n" + "".join(f"  - {{domains: [{', '.join(g)}], upstream: '{upstream}'}}\n" for g in groups)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def cgroup_pids(cg: bench.Cgroup) -> set[int]:
    """The container's processes (host PIDs), from its cgroup."""
    if cg.v2 is not None:
        return {int(x) for x in (cg.v2 / "cgroup.procs").read_text().split()}
    p = cg._v1file("memory", "cgroup.procs")  # noqa: SLF001 - bench plumbing
    return {int(x) for x in p.read_text().split()} if p else set()


def nginx_costs(nginx: Any, res: Result) -> None:
    """What stock nginx costs at this size, measured on the running container."""
    cg = bench.Cgroup(nginx)
    res.nginx_anon_mb = bench.mb(cg.memory()[2])
    master = int(nginx.attrs["State"]["Pid"])
    status = Path(f"/proc/{master}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    res.nginx_master_rss_mb = round(int(m.group(1)) / 1024, 1) if m else None
    res.nginx_workers = len(cgroup_pids(cg) - {master})
    t: list[float] = []
    for _ in range(3):
        t0 = time.monotonic()
        r = nginx.exec_run(["nginx", "-t", "-q"])
        t.append(time.monotonic() - t0)
        if r.exit_code != 0:
            raise RuntimeError(f"nginx -t failed: {r.output.decode()[-300:]}")
    res.nginx_t_s = round(statistics.median(t), 2)
    hups: list[float] = []
    for _ in range(3):
        old = cgroup_pids(cg)
        t0 = time.monotonic()
        nginx.kill(signal="HUP")
        wait_for("a new nginx worker", lambda: cgroup_pids(cg) - old - {master}, timeout=120, interval=0.01)
        hups.append(time.monotonic() - t0)
        wait_for("the old workers to exit", lambda: not (old - {master}) & cgroup_pids(cg), timeout=120,
                 interval=0.1)
    res.nginx_hup_s = round(statistics.median(hups), 2)
    t = []
    for _ in range(3):
        old = cgroup_pids(cg)
        t0 = time.monotonic()
        nginx.exec_run(["nginx", "-s", "reload"])
        t.append(time.monotonic() - t0)
        wait_for("a new nginx worker", lambda: cgroup_pids(cg) - old - {master}, timeout=120, interval=0.05)
        wait_for("the old workers to exit", lambda: not (old - {master}) & cgroup_pids(cg), timeout=120,
                 interval=0.1)
    res.nginx_s_reload_s = round(statistics.median(t), 2)


def endpoint_times(port: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for path in ("/status", "/plan", "/metrics", "/status?limit=50", "/plan?limit=50", "/healthz"):
        times, size = [], 0
        for _ in range(3):
            t0 = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:  # noqa: S310 - loopback
                size = len(r.read())
            times.append(time.monotonic() - t0)
        out[path] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "bytes": size}
    return out


def events_since(port: int, since: int) -> tuple[list[dict[str, Any]], int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/events?since={since}", timeout=30) as r:  # noqa: S310
        doc = json.loads(r.read())
    return doc["events"], int(doc["next"])


def _at(ev: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(ev["at"].replace("Z", "+00:00")).timestamp()


def presents(port: int, name: str) -> bool:
    """True when nginx answers SNI ``name`` with a certificate for that name (any issuer)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return False
    if not der:
        return False
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return False
    return name in san.value.get_values_for_type(x509.DNSName)


def add_site_on_disk(res: Result, sites_file: Path, name: str, upstream: str, https_port: int,
                     status_port: int, timeout: float) -> None:
    """A sites-file entry whose certificate is on disk already: until nginx presents it."""
    _, cursor = events_since(status_port, 0)
    text = sites_file.read_text() + f"  - {{domains: [{name}], upstream: '{upstream}'}}\n"
    t_wall = time.time()
    t0 = time.monotonic()
    write_atomic(sites_file, text)
    wait_for(f"{name} presented over TLS", lambda: presents(https_port, name), timeout=timeout, interval=0.05)
    res.ondisk_served_s = round(time.monotonic() - t0, 2)
    time.sleep(1)
    evs, _ = events_since(status_port, cursor)
    mine = [e for e in evs if e.get("site") == name or e["kind"] == "reload"]
    res.ondisk_events = [f"{_at(e) - t_wall:+.2f}s {e['kind']} {e.get('site', '')}" for e in mine]
    res.ondisk_noticed_s = next((round(_at(e) - t_wall, 2) for e in mine if e["kind"] == "site_added"), None)
    res.ondisk_reload_event_s = next((round(_at(e) - t_wall, 2) for e in mine if e["kind"] == "reload"), None)


def add_one_site(res: Result, sites_file: Path, base: str, name: str, upstream: str, https_port: int,
                 status_port: int, root_pem: str, timeout: float) -> None:
    _, cursor = events_since(status_port, 0)
    ctx = tls_context(root_pem)
    text = sites_file.read_text() + f"  - {{domains: [{name}], upstream: '{upstream}'}}\n"
    t_wall = time.time()
    t0 = time.monotonic()
    write_atomic(sites_file, text)
    wait_for(f"{name} served over HTTPS", lambda: bench.served(https_port, name, ctx), timeout=timeout,
             interval=0.05)
    res.add_served_s = round(time.monotonic() - t0, 2)
    time.sleep(1)
    evs, _ = events_since(status_port, cursor)
    mine = [e for e in evs if e.get("site") == name or e["kind"] == "reload"]
    res.add_events = [f"{_at(e) - t_wall:+.2f}s {e['kind']} {e.get('site', '')}" for e in mine]

    def first(kind: str) -> float | None:
        return next((_at(e) - t_wall for e in mine if e["kind"] == kind and (kind == "reload" or e["site"] == name)),
                    None)
    added, requested, issued = first("site_added"), first("cert_requested"), first("cert_issued")
    reloads = [_at(e) - t_wall for e in mine if e["kind"] == "reload"]
    reload_after = next((r for r in reloads if issued is not None and r >= issued - 0.001), None)
    if requested is not None and issued is not None:
        res.add_noticed_to_certbot_s = round(requested, 2)
        res.add_certbot_s = round(issued - requested, 2)
        if reload_after is not None:
            res.add_issued_to_reload_s = round(reload_after - issued, 2)
            res.add_reload_to_served_s = round(res.add_served_s - reload_after, 2)
        res.add_sidecar_s = round(res.add_served_s - res.add_certbot_s, 2)
    del added


def one_run(client: docker.DockerClient, images: dict[str, str], n: int, group: int, k: int, logdir: Path,
            idle_seconds: float, add: bool) -> Result:
    res = Result(n, group, k)
    project = "scale" + uuid.uuid4().hex[:8]
    sites_dir = Path(tempfile.mkdtemp(prefix=f"{project}-sites-"))
    names = [f"s{i}.{DOMAIN}" for i in range(1, n + 1)]
    groups = [names[i:i + group] for i in range(0, n, group)]
    app = f"{project}-app"
    upstream = f"http://{app}:5678"
    sites_file = sites_dir / "sites.yml"
    sites_file.write_text(sites_yaml(groups, upstream))
    os.chmod(sites_dir, 0o755)
    os.chmod(sites_file, 0o644)
    https_port, status_port, mgmt_port = free_port(), free_port(), free_port()
    env = {
        **os.environ, **{k_: v for k_, v in images.items() if k_ != "CADDY_IMAGE"},
        "HTTP_PORT": str(free_port()), "HTTPS_PORT": str(https_port),
        "PEBBLE_MGMT_PORT": str(mgmt_port), "STATUS_PORT_HOST": str(status_port),
        "DEMO_NETWORK": f"{project}-net", "SITES_DIR": str(sites_dir), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info"), "SITES_SCOPE": "project",
        "BENCH_NGINX_CONTAINER": f"{project}-nginx-1", "BENCH_PEBBLE_TEMPLATE": "",
    }
    files = [bench.DEMO / "compose.yml", bench.ROOT / "bench" / "compose.bench.yml"]

    def compose(*args: str, check: bool = True) -> None:
        cmd = ["docker", "compose", "-p", project, *[a for f in files for a in ("-f", str(f))], *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    def service(name: str) -> Any:
        return client.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={project}", f"com.docker.compose.service={name}"]})[0]

    sidecar = None
    try:
        bench.log(f"scale N={n} group={group} run {k}: pebble, nginx and the app")
        compose("up", "-d", "--no-build", "--pull", "never", "--wait", "pebble", "nginx")
        client.containers.run(images["APP_IMAGE"], ["-listen=:5678", "-text=hello"], name=app, detach=True,
                              network=f"{project}-net", labels={bench.RUN_LABEL: project})
        t0 = time.monotonic()
        data = startup.lineages_tar([g[0] for g in groups] + [f"ondisk.{DOMAIN}"], dt.datetime.now(dt.timezone.utc),
                                    sans={g[0]: g for g in groups})
        helper = client.containers.create(images["SIDECAR_IMAGE"], entrypoint=["true"],
                                          labels={bench.RUN_LABEL: project},
                                          volumes={f"{project}_certs": {"bind": "/etc/letsencrypt", "mode": "rw"}})
        try:
            helper.put_archive("/etc/letsencrypt", data)
        finally:
            helper.remove(force=True)
        res.generate_s = round(time.monotonic() - t0, 1)
        os.sync()  # (the lineages just written are on disk: no writeback during the start measured)
        bench.log(f"scale N={n} run {k}: {len(groups)} lineages written in {res.generate_s}s; starting the sidecar")
        compose("up", "-d", "--no-build", "--pull", "never", "--no-deps", "sidecar")
        sidecar = service("sidecar")
        res.starts.append(asdict(startup.measure_start(client, sidecar, "first start (writes every vhost)", project)))
        bench.log(f"scale N={n} run {k}: first start {res.starts[-1]}")
        sidecar.restart(timeout=10)
        res.starts.append(asdict(startup.measure_start(client, sidecar, "restart (all in place)", project)))
        bench.log(f"scale N={n} run {k}: restart {res.starts[-1]}")
        wait_for("the status server", lambda: _answers(status_port), timeout=60, interval=0.2)
        if idle_seconds > 0:
            cg = bench.Cgroup(sidecar)
            c0, w0 = cg.cpu_seconds(), time.monotonic()
            time.sleep(idle_seconds)
            c1, w1 = cg.cpu_seconds(), time.monotonic()
            res.idle_cpu_pct = round(100 * (c1 - c0) / (w1 - w0), 2)
            res.idle_rss_mb = bench.mb(cg.memory()[2])
            res.idle_seconds = round(w1 - w0, 1)
            bench.log(f"scale N={n} run {k}: idle {res.idle_cpu_pct}% {res.idle_rss_mb} MB")
        res.endpoints = endpoint_times(status_port)
        bench.log(f"scale N={n} run {k}: endpoints {res.endpoints}")
        nginx = service("nginx")
        nginx.reload()
        nginx_costs(nginx, res)
        bench.log(f"scale N={n} run {k}: nginx anon {res.nginx_anon_mb} MB, -t {res.nginx_t_s}s, "
                  f"HUP {res.nginx_hup_s}s, -s reload {res.nginx_s_reload_s}s")
        if add:
            add_site_on_disk(res, sites_file, f"ondisk.{DOMAIN}", upstream, https_port, status_port, timeout=120)
            bench.log(f"scale N={n} run {k}: a site with its certificate on disk added, presented after "
                      f"{res.ondisk_served_s}s: {res.ondisk_events}")
            _, ca = service("pebble").exec_run(["cat", "/pebble-ca/ca.pem"])
            root = bench.pebble_root(mgmt_port, ca.decode())
            add_one_site(res, sites_file, DOMAIN, f"added.{DOMAIN}", upstream, https_port, status_port, root,
                         timeout=120)
            bench.log(f"scale N={n} run {k}: one site added, served after {res.add_served_s}s "
                      f"(certbot {res.add_certbot_s}s): {res.add_events}")
    except Exception as exc:  # noqa: BLE001 - reported in the table
        res.error = f"{type(exc).__name__}: {exc}"
        bench.log(f"scale N={n} run {k}: ERROR {res.error}")
    finally:
        if sidecar is not None:
            try:
                (logdir / f"scale-n{n}-g{group}-run{k}.log").write_bytes(sidecar.logs())
            except Exception:  # noqa: BLE001
                pass
        bench.remove_run_containers(client, project)
        compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
        shutil.rmtree(sites_dir, ignore_errors=True)
    return res


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def _med(values: list[Any]) -> Any:
    v = [x for x in values if x is not None]
    return round(statistics.median(v), 2) if v else None


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    f = bench.fmt
    rows: list[tuple[str, str, Any]] = []

    def add(what: str, target: str, values: list[Any], digits: int = 2) -> None:
        if any(isinstance(v, str) for v in values):
            rows.append((what, target, (values[0] if len(set(values)) == 1 else "", " / ".join(values))))
            return
        rows.append((what, target, (f(_med(values), digits), " / ".join(f(v, digits) for v in values))))

    first = [r.starts[0] if r.starts else {} for r in results]
    restart = [r.starts[1] if len(r.starts) > 1 else {} for r in results]
    add("first start: every site planned, s", "3", [s.get("planned_s") for s in first])
    add("first start: first pass done, s", "", [s.get("pass_done_s") for s in first])
    add("restart: every site planned, s", "3", [s.get("planned_s") for s in restart])
    add("restart: first pass done, s", "", [s.get("pass_done_s") for s in restart])
    add("certificates requested at start-up", "0", [(s.get("requested") or 0) + (t.get("requested") or 0)
                                                    for s, t in zip(first, restart)], 0)
    add("certbot runs at start-up", "0", [(s.get("certbot_runs") or 0) + (t.get("certbot_runs") or 0)
                                          for s, t in zip(first, restart)], 0)
    add("reloads: first start / restart", "", [f"{s.get('reloads')}/{t.get('reloads')}"
                                               for s, t in zip(first, restart)], 0)
    add("sidecar peak RSS at start, MB", "", [max(s.get("peak_rss_mb") or 0, t.get("peak_rss_mb") or 0)
                                              for s, t in zip(first, restart)], 0)
    add("sidecar idle RSS, MB", "150", [r.idle_rss_mb for r in results], 0)
    add("sidecar idle CPU, % of a core", "1", [r.idle_cpu_pct for r in results])
    for path in (results[0].endpoints if results else {}):
        add(f"GET {path}, s (bytes: {results[0].endpoints[path]['bytes']:,})", "1",
            [r.endpoints.get(path, {}).get("median_s") for r in results], 3)
    add("one site added, certificate on disk: presented over TLS, s", "4", [r.ondisk_served_s for r in results])
    add("  change -> site_added event (noticed, sites file parsed), s", "", [r.ondisk_noticed_s for r in results])
    add("  change -> reload event (tested, reloaded, verified), s", "", [r.ondisk_reload_event_s for r in results])
    add("one site added, certificate from Pebble: served over HTTPS, s", "", [r.add_served_s for r in results])
    add("  of which certbot (requested -> issued), s", "", [r.add_certbot_s for r in results])
    add("  sidecar: change -> certbot started, s", "", [r.add_noticed_to_certbot_s for r in results])
    add("  sidecar: issued -> reload verified (event), s", "", [r.add_issued_to_reload_s for r in results])
    add("  reload event -> served, s", "", [r.add_reload_to_served_s for r in results])
    add("  sidecar's part (served minus certbot), s", "", [r.add_sidecar_s for r in results])
    add("nginx memory (container anon), MB", "", [r.nginx_anon_mb for r in results], 0)
    add("nginx master VmRSS, MB", "", [r.nginx_master_rss_mb for r in results], 0)
    add("nginx -t, s", "", [r.nginx_t_s for r in results])
    add("SIGHUP to first new worker, s", "", [r.nginx_hup_s for r in results])
    add("nginx -s reload (its own run), s", "", [r.nginx_s_reload_s for r in results])
    r0 = results[0] if results else None
    head = (f"# {r0.sites if r0 else '?'} sites"
            + (f" in {-(-r0.sites // r0.group)} certificates of {r0.group} names" if r0 and r0.group > 1 else "")
            + f", {meta['timestamp']}")
    lines = [head, "", "| measure | target | median | runs |", "|---|---:|---:|---|"]
    lines += [f"| {w} | {t} | {m} | {runs} |" for w, t, (m, runs) in rows]
    lines += [""]
    for r in results:
        lines.append(f"- run {r.run}: lineages generated in {r.generate_s}s; added site events: "
                     + "; ".join(r.add_events) + (f"; ERROR {r.error}" if r.error else ""))
    lines += [
        "",
        "Start-up: from the sidecar container's start (`State.StartedAt`) to the moment its first pass had "
        "planned every site and to the end of that pass (the sidecar's `first pass done` log line). Idle: "
        "the sidecar's cgroup over the idle window after the restart (RSS = anon memory). Endpoints: "
        "median of 3 GETs from the host. nginx: anon memory of its container (master and workers, "
        "shared pages once), `nginx -t` and `nginx -s reload` through `docker exec` (about 0.05 s of "
        "that is the exec), SIGHUP from the Docker API until a new worker process appears in the "
        "container's cgroup. One site added: the sites file rewritten (rename) until the new name serves "
        "a Pebble certificate over HTTPS with SNI; the split comes from `/events` (cert_requested, "
        "cert_issued, reload).",
        "",
        f"Machine: {meta['machine']}. Sidecar image {meta['sidecar_image']} ({meta['sidecar_image_id']}); "
        f"repo {meta['git']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=10000, help="names (sites-file entries with --group 1)")
    ap.add_argument("--group", type=int, default=1, help="names per sites-file entry and certificate")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--no-add", action="store_true", help="skip adding one site")
    ap.add_argument("--out", type=Path, default=bench.RESULTS)
    ap.add_argument("--no-latest", action="store_true")
    args = ap.parse_args(argv)
    images = bench._env_images()  # noqa: SLF001
    client = docker.from_env(timeout=600)
    side = client.images.get(images["SIDECAR_IMAGE"])
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logdir = args.out / "logs" / f"scale-{ts}"
    logdir.mkdir(parents=True, exist_ok=True)
    results = [one_run(client, images, args.sites, args.group, k, logdir, args.idle_seconds, not args.no_add)
               for k in range(1, args.runs + 1)]
    meta = {
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Docker {client.version().get('Version')}",
        "sidecar_image": images["SIDECAR_IMAGE"], "sidecar_image_id": side.short_id, "git": bench.git_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    md = markdown(results, meta)
    (args.out / f"scale-{ts}.md").write_text(md)
    (args.out / f"scale-{ts}.json").write_text(json.dumps(
        {"meta": meta, "runs": [asdict(r) for r in results]}, indent=1) + "\n")
    if not args.no_latest:
        (args.out / "scale-latest.md").write_text(md)
    print(md)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
