#!/usr/bin/env python3
"""What stock nginx takes to parse the sidecar's configuration at N sites, by layout.

N sites-file sites on one backend host (``http://app:5678``), each with its own ECDSA certificate
in certbot's layout, rendered by the sidecar's own ``render_all``, then ``nginx -t`` in the test
nginx image (a container on a network of its own where ``app`` resolves) for each layout:

- generated: what the sidecar writes (one shared ``upstream`` block in sidecar-00-upstreams.conf);
- upstream block per site: the same files with an ``upstream`` block of its own in every site file
  (the sidecar's layout before the shared blocks);
- floor: ``listen``, ``server_name``, the certificate and ``proxy_pass`` alone, per site;
- stock nginx as the issue measured it: a server per certificate that answers ``return 200``;
- the same servers without TLS: what one SSL context per certificate costs.

Usage: .venv/bin/python bench/nginx_parse.py [--sites 10000] [--runs 3]
Results: bench/results/nginx-parse-<timestamp>.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup  # noqa: E402 - lineages_tar (puts the repo root on sys.path through bench/run.py)
import run as bench  # noqa: E402

from sidecar.core import render  # noqa: E402
from sidecar.core.model import Certificate, Site, SourceKind, Upstream  # noqa: E402

LE = "/etc/letsencrypt"


def layouts(n: int) -> dict[str, dict[str, str]]:
    now = dt.datetime.now(dt.timezone.utc)
    sites = [Site((f"s{i}.parse.test",), (Upstream("http", "app", 5678),), "bench", SourceKind.FILE) for i in range(n)]
    certs = {s.name: Certificate(s.name, frozenset(s.domains), now, now + dt.timedelta(days=80), "bench CA", "ecdsa", i + 1,
                                 fullchain_path=f"{LE}/live/{s.name}/fullchain.pem",
                                 privkey_path=f"{LE}/live/{s.name}/privkey.pem") for i, s in enumerate(sites)}
    generated = render.render_all(sites, certs, "/var/www/acme", render.NginxTraits(http2_directive=True))
    per_site = {name: text for name, text in generated.items() if name != render.POOLS_FILE}
    for s in sites:
        name, own = render.site_filename(s.name), render.upstream_name(s.name)
        per_site[name] = (f"upstream {own} {{\n    server app:5678;\n    keepalive {render.POOL_KEEPALIVE};\n}}\n"
                          + re.sub(render.POOL_NAME, own, per_site[name]))
    floor = {render.site_filename(s.name): (
        f"server {{\n    listen 443 ssl;\n    server_name {s.domains[0]};\n"
        f"    ssl_certificate {LE}/live/{s.name}/fullchain.pem;\n    ssl_certificate_key {LE}/live/{s.name}/privkey.pem;\n"
        f"    location / {{ proxy_pass http://app:5678; }}\n}}\n") for s in sites}
    # the measurement of stock nginx: a server block per certificate answering by itself,
    # and the same servers without TLS (what one SSL context per certificate costs)
    stock = {render.site_filename(s.name): (
        f"server {{\n    listen 443 ssl;\n    server_name {s.domains[0]};\n"
        f"    ssl_certificate {LE}/live/{s.name}/fullchain.pem;\n    ssl_certificate_key {LE}/live/{s.name}/privkey.pem;\n"
        f"    return 200;\n}}\n") for s in sites}
    plain = {render.site_filename(s.name): f"server {{\n    listen 80;\n    server_name {s.domains[0]};\n    return 200;\n}}\n"
             for s in sites}
    return {"generated (shared upstream block)": generated, "upstream block per site": per_site,
            "floor (listen, server_name, certificate, proxy_pass)": floor,
            "stock nginx: listen, server_name, certificate, return 200": stock,
            "the same without TLS (listen 80, server_name, return 200)": plain}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    images = bench._env_images()
    client = docker.from_env()
    tag = f"parse{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    root.chmod(0o755)
    names = [f"s{i}.parse.test" for i in range(args.sites)]
    with tarfile.open(fileobj=io.BytesIO(startup.lineages_tar(names, dt.datetime.now(dt.timezone.utc)))) as tar:
        tar.extractall(root / "le", filter="fully_trusted")
    network = client.networks.create(tag, labels={"bench": tag})
    started = []
    results: dict[str, list[float]] = {}
    try:
        # the backend: any container that answers to "app" on the network (nginx -t only resolves it)
        started.append(client.containers.run(images["NGINX_IMAGE"], name=f"{tag}-app", detach=True,
                                             labels={"bench": tag}))
        network.connect(started[-1], aliases=["app"])
        for layout, files in layouts(args.sites).items():
            conf = root / re.sub(r"\W+", "-", layout)[:30]
            conf.mkdir()
            for name, text in files.items():
                (conf / name).write_text(text)
            box = client.containers.run(images["NGINX_IMAGE"], ["sleep", "infinity"], entrypoint=[], detach=True,
                                        network=tag, labels={"bench": tag}, name=f"{tag}-{len(started)}",
                                        volumes={str(root / "le"): {"bind": LE, "mode": "ro"},
                                                 str(conf): {"bind": "/etc/nginx/conf.d", "mode": "ro"}})
            started.append(box)
            times = []
            for _ in range(args.runs):
                t0 = time.monotonic()
                r = box.exec_run(["nginx", "-t", "-q"])
                times.append(time.monotonic() - t0)
                if r.exit_code != 0:
                    raise RuntimeError(f"{layout}: nginx -t failed: {r.output.decode()[-300:]}")
            results[layout] = times
            bench.log(f"{layout}: nginx -t {', '.join(f'{t:.2f}' for t in times)} s")
    finally:
        for c in started:
            c.remove(force=True)
        network.remove()
        client.close()
        shutil.rmtree(root, ignore_errors=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"# nginx -t at {args.sites} sites, by layout ({stamp})", "",
             "| layout | nginx -t, median s | runs |", "|---|---:|---|"]
    lines += [f"| {k} | {statistics.median(v):.2f} | {' / '.join(f'{t:.2f}' for t in v)} |" for k, v in results.items()]
    lines += ["", f"{args.sites} sites on one backend host, each with its own ECDSA certificate; `nginx -t -q` "
              f"through `docker exec` in {images['NGINX_IMAGE']} (bench/nginx_parse.py)."]
    out = Path(__file__).resolve().parent / "results" / f"nginx-parse-{stamp}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
