#!/usr/bin/env python3
"""Benchmark: the sidecar starting with many certificates already on disk.

The local demo stack (Pebble, nginx) with one app container and a sites file of N sites
(default 1,000), and for each site a certbot lineage (live/, archive/, renewal/) holding a
valid ECDSA certificate from a throw-away CA, written into the certificate volume before the
sidecar starts. Then the sidecar is started twice: the first start writes N vhosts and
reloads nginx; the restart finds everything in place. Measured for each start, from the
container's start: its "ready" line, its first pass planned and done (the sidecar logs
both), CPU seconds and peak RSS of the sidecar, and the certbot runs it made (must be 0).

Usage: bench/startup.sh [--certs 1000] [--runs 1]
Results: bench/results/startup-<timestamp>.md and startup-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 - the shared plumbing of bench/run.py (it puts the repo root on sys.path)
from tests.support.net import free_port, wait_for  # noqa: E402

DOMAIN = "startup.test"
FIRST_PASS = re.compile(r"^(\S+) INFO +first pass done in ([\d.]+)s \(planned after ([\d.]+)s\): (\d+) sites?, "
                        r"(\d+) certificates? on disk, (\d+) requested$", re.M)


def lineages_tar(names: list[str], now: dt.datetime, sans: dict[str, list[str]] | None = None) -> bytes:
    """certbot's layout for every name, as a tar for ``put_archive``: one CA, one ECDSA leaf each
    (for the names ``sans[name]`` if given, else for ``name`` alone)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "start-up bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(path: str, data: bytes | None = None, link: str | None = None, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(path)
            info.mtime = int(now.timestamp())
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))

        # an install that has an ACME account already (never used here: nothing is due)
        for d in ("live", "archive", "renewal", "accounts", "accounts/pebble:14000", "accounts/pebble:14000/dir",
                  "accounts/pebble:14000/dir/0123456789abcdef"):
            add(d)
        for name in names:
            key = ec.generate_private_key(ec.SECP256R1())
            # issued 10 days ago, 90 days valid: not due for renewal for another 50 days
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                    .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(days=10)).not_valid_after(now + dt.timedelta(days=80))
                    .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in (sans or {}).get(name, [name])]),
                                   critical=False)
                    .sign(ca_key, hashes.SHA256()))
            cert_pem = cert.public_bytes(serialization.Encoding.PEM)
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            add(f"archive/{name}")
            add(f"live/{name}")
            for kind, data, mode in (("cert", cert_pem, 0o644), ("chain", ca_pem, 0o644),
                                     ("fullchain", cert_pem + ca_pem, 0o644), ("privkey", key_pem, 0o600)):
                add(f"archive/{name}/{kind}1.pem", data, mode=mode)
                add(f"live/{name}/{kind}.pem", link=f"../../archive/{name}/{kind}1.pem")
            add(f"renewal/{name}.conf", (
                f"version = 4.0.0\narchive_dir = /etc/letsencrypt/archive/{name}\n"
                f"cert = /etc/letsencrypt/live/{name}/cert.pem\nprivkey = /etc/letsencrypt/live/{name}/privkey.pem\n"
                f"chain = /etc/letsencrypt/live/{name}/chain.pem\n"
                f"fullchain = /etc/letsencrypt/live/{name}/fullchain.pem\n\n[renewalparams]\n"
                "authenticator = webroot\nserver = https://pebble:14000/dir\nkey_type = ecdsa\n").encode())
    return buf.getvalue()


@dataclass
class Start:
    which: str
    ready_s: float | None = None
    planned_s: float | None = None
    pass_done_s: float | None = None
    pass_s: float | None = None
    sites: int | None = None
    on_disk: int | None = None
    requested: int | None = None
    certbot_runs: int | None = None
    reloads: int | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None


@dataclass
class Result:
    certs: int
    run: int
    generate_s: float = 0.0
    starts: list[Start] = field(default_factory=list)


def _log_time(line_ts: str) -> float:
    return dt.datetime.fromisoformat(line_ts.replace("Z", "+00:00")).timestamp()


class LogTail(threading.Thread):
    """A container's log from ``since`` on, as the engine streams it. Asking the engine for the
    whole log every 0.2 s, as this benchmark did, kept dockerd busy re-reading megabytes (ten
    thousand debug lines) on the cores the sidecar's start-up was measured on."""

    def __init__(self, container: Any, since: float) -> None:
        super().__init__(daemon=True)
        self.stream = container.logs(stream=True, follow=True, since=since)
        self.chunks: list[bytes] = []

    def run(self) -> None:
        try:
            for chunk in self.stream:
                self.chunks.append(chunk)
        except Exception:  # noqa: BLE001 - closed by stop()
            pass

    def text(self) -> str:
        return b"".join(list(self.chunks)).decode("utf-8", "replace")

    def stop(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


def measure_start(client: docker.DockerClient, sidecar: Any, which: str, project: str) -> Start:
    st = Start(which)
    sidecar.reload()
    started = dt.datetime.fromisoformat(sidecar.attrs["State"]["StartedAt"][:26].rstrip("Z") + "+00:00").timestamp()
    tail = LogTail(sidecar, started)
    tail.start()
    watcher = bench.CertbotWatcher(sidecar.id, project)
    watcher.start()
    cg = bench.Cgroup(sidecar)
    cpu0 = cg.cpu_seconds()
    sampler = bench.MemorySampler(cg)
    sampler.start()
    try:
        wait_for("the first pass", lambda: FIRST_PASS.search(tail.text()), timeout=300, interval=0.2)
        time.sleep(5)  # anything it would wrongly start now shows up in the logs and the watcher
        text = tail.text()
        m = FIRST_PASS.search(text)
        assert m is not None
        done = _log_time(m.group(1))
        ready = re.search(r"^(\S+) INFO +ready: ", text, re.M)
        st.ready_s = round(_log_time(ready.group(1)) - started, 2) if ready else None
        st.pass_s = float(m.group(2))
        st.pass_done_s = round(done - started, 2)
        st.planned_s = round(done - float(m.group(2)) + float(m.group(3)) - started, 2)
        st.sites, st.on_disk, st.requested = int(m.group(4)), int(m.group(5)), int(m.group(6))
        st.reloads = text.count("nginx reloaded")
        st.cpu_s = round(cg.cpu_seconds() - cpu0, 2)
        sampler.sample()
        st.peak_rss_mb = bench.mb(sampler.max_rss)
        requests = len(re.findall(r": (requesting|renewing|updating|replacing) certificate", text))
        st.requested = max(st.requested, requests)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        st.error = f"{type(exc).__name__}: {exc}"
    finally:
        tail.stop()
        sampler.stop()
        watcher.stop()
        st.certbot_runs = watcher.runs
    return st


def one_run(client: docker.DockerClient, images: dict[str, str], n: int, k: int, logdir: Path) -> Result:
    res = Result(n, k)
    project = "startup" + uuid.uuid4().hex[:8]
    sites_dir = Path(tempfile.mkdtemp(prefix=f"{project}-sites-"))
    names = [f"s{i}.{DOMAIN}" for i in range(1, n + 1)]
    app = f"{project}-app"
    (sites_dir / "sites.yml").write_text("sites:\n" + "".join(
        f"  - {{domains: [{name}], upstream: 'http://{app}:5678'}}\n" for name in names))
    os.chmod(sites_dir, 0o755)
    os.chmod(sites_dir / "sites.yml", 0o644)
    env = {
        **os.environ, **{k_: v for k_, v in images.items() if k_ != "CADDY_IMAGE"},
        "HTTP_PORT": str(free_port()), "HTTPS_PORT": str(free_port()),
        "PEBBLE_MGMT_PORT": str(free_port()), "STATUS_PORT_HOST": str(free_port()),
        "DEMO_NETWORK": f"{project}-net", "SITES_DIR": str(sites_dir), "LOG_LEVEL": "info",
        "BENCH_NGINX_CONTAINER": f"{project}-nginx-1", "BENCH_PEBBLE_TEMPLATE": "",
    }
    files = [bench.DEMO / "compose.yml", bench.ROOT / "bench" / "compose.bench.yml"]

    def compose(*args: str, check: bool = True) -> None:
        cmd = ["docker", "compose", "-p", project, *[a for f in files for a in ("-f", str(f))], *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    try:
        bench.log(f"start-up N={n} run {k}: pebble, nginx and the app")
        compose("up", "-d", "--no-build", "--pull", "never", "--wait", "pebble", "nginx")
        client.containers.run(images["APP_IMAGE"], ["-listen=:5678", "-text=hello"], name=app, detach=True,
                              network=f"{project}-net", labels={bench.RUN_LABEL: project})
        t0 = time.monotonic()
        data = lineages_tar(names, dt.datetime.now(dt.timezone.utc))
        helper = client.containers.create(images["SIDECAR_IMAGE"], entrypoint=["true"], labels={bench.RUN_LABEL: project},
                                          volumes={f"{project}_certs": {"bind": "/etc/letsencrypt", "mode": "rw"}})
        try:
            helper.put_archive("/etc/letsencrypt", data)
        finally:
            helper.remove(force=True)
        res.generate_s = round(time.monotonic() - t0, 1)
        os.sync()  # (the lineages just written are on disk: no writeback during the start measured)
        bench.log(f"start-up N={n} run {k}: {n} lineages written in {res.generate_s}s; starting the sidecar")
        compose("up", "-d", "--no-build", "--pull", "never", "--no-deps", "sidecar")
        sidecar = client.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={project}", "com.docker.compose.service=sidecar"]})[0]
        res.starts.append(measure_start(client, sidecar, "first start (writes every vhost)", project))
        sidecar.restart(timeout=10)
        res.starts.append(measure_start(client, sidecar, "restart (all in place)", project))
        (logdir / f"startup-n{n}-run{k}.log").write_bytes(sidecar.logs())
    except Exception as exc:  # noqa: BLE001
        res.starts.append(Start("setup", error=f"{type(exc).__name__}: {exc}"))
    finally:
        bench.remove_run_containers(client, project)
        compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
        shutil.rmtree(sites_dir, ignore_errors=True)
    return res


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    f = bench.fmt
    lines = [
        f"# Start-up with existing certificates, {meta['timestamp']}", "",
        "| certificates | run | start | ready s | planned s | first pass done s | pass s | sites | on disk "
        "| requested | certbot runs | reloads | CPU s | peak RSS MB | error |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        for s in r.starts:
            lines.append(f"| {r.certs} | {r.run} | {s.which} | {f(s.ready_s, 2)} | {f(s.planned_s, 2)} | "
                         f"{f(s.pass_done_s, 2)} | {f(s.pass_s, 2)} | {f(s.sites, 0)} | {f(s.on_disk, 0)} | "
                         f"{f(s.requested, 0)} | {f(s.certbot_runs, 0)} | {f(s.reloads, 0)} | {f(s.cpu_s)} | "
                         f"{f(s.peak_rss_mb, 0)} | {s.error or ''} |")
    lines += [
        "",
        "Seconds from the sidecar container's start (`State.StartedAt`) to its `ready` line, to the moment "
        "its first pass had planned every site (`planned`), and to the end of that pass (`first pass done`: "
        "vhosts rendered and written, `nginx -t`, reload, plan, status). `pass s` is the pass alone. "
        "requested: certificate requests the sidecar logged in the first pass and the 5 s after it; certbot "
        "runs: `docker exec`/container starts of certbot seen on the engine. CPU s and peak RSS: the "
        "sidecar's container over the same time. The lineages are certbot's layout with a valid ECDSA "
        "certificate from a throw-away CA (issued 10 days ago, 90 days valid), one per site of the sites file.",
        "",
        f"Machine: {meta['machine']}. Sidecar image {meta['sidecar_image']} ({meta['sidecar_image_id']}); "
        f"repo {meta['git']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--certs", type=int, default=1000, help="certificates (and sites) on disk")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=bench.RESULTS)
    ap.add_argument("--no-latest", action="store_true")
    args = ap.parse_args(argv)
    images = bench._env_images()
    client = docker.from_env(timeout=300)
    side = client.images.get(images["SIDECAR_IMAGE"])
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logdir = args.out / "logs" / f"startup-{ts}"
    logdir.mkdir(parents=True, exist_ok=True)
    results = [one_run(client, images, args.certs, k, logdir) for k in range(1, args.runs + 1)]
    meta = {
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Docker {client.version().get('Version')}",
        "sidecar_image": images["SIDECAR_IMAGE"], "sidecar_image_id": side.short_id, "git": bench.git_info(),
    }
    md = markdown(results, meta)
    (args.out / f"startup-{ts}.md").write_text(md)
    (args.out / f"startup-{ts}.json").write_text(json.dumps(
        {"meta": meta, "runs": [asdict(r) for r in results]}, indent=1) + "\n")
    if not args.no_latest:
        (args.out / "startup-latest.md").write_text(md)
    print(md)
    return 1 if any(s.error for r in results for s in r.starts) else 0


if __name__ == "__main__":
    sys.exit(main())
