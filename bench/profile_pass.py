#!/usr/bin/env python3
"""Where a pass's time goes at N sites: the real loop on the host, under cProfile.

The sidecar's Reconciler with the unit tests' hand-written Docker fake (nginx answers at once,
so nginx's own time is not in here: bench/scale.py measures that) and a sites file of N sites,
each with a certbot lineage on disk (bench/startup.py's generator). Profiles, in turn: the first
pass (writes every vhost), a second pass (nothing changed), a pass after one site was added to
the sites file (its certificate from the fake certbot), and /status, /plan, /metrics.

Usage: .venv/bin/python bench/profile_pass.py [--sites 10000] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup  # noqa: E402 - lineages_tar (puts the repo root on sys.path through bench/run.py)

from sidecar.adapters import nginx as nginx_adapter  # noqa: E402
from sidecar.core import ratelimits  # noqa: E402
from sidecar.core.settings import Settings  # noqa: E402
from sidecar.engine.loop import Reconciler  # noqa: E402
from sidecar.ops import metrics  # noqa: E402
from sidecar.ops.httpserver import OpsApp, StatusBoard  # noqa: E402
from tests.unit import test_loop  # noqa: E402 - FakeDocker, FakeCertbot, NGINX


def profiled(what: str, fn: Callable[[], Any], top: int) -> Any:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    out = fn()
    prof.disable()
    took = time.perf_counter() - t0
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(top)
    print(f"\n===== {what}: {took:.2f}s =====")
    print("\n".join(s.getvalue().splitlines()[6:6 + top + 4]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sites", type=int, default=10000)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="profile-pass-"))
    s = Settings(acme_server=test_loop.CA, certs_dir=tmp / "le", webroot_dir=tmp / "www", conf_dir=tmp / "conf",
                 state_dir=tmp / "state", ari=False, sites_file=tmp / "sites.yml")
    for d in (s.certs_dir, s.webroot_dir, s.conf_dir, s.state_dir):
        d.mkdir(parents=True)
    names = [f"s{i}.scale.test" for i in range(1, args.sites + 1)]
    t0 = time.perf_counter()
    data = startup.lineages_tar(names, dt.datetime.now(dt.timezone.utc))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(s.certs_dir)  # noqa: S202 - made just now
    for name in names:  # (the fake CA's server, so nothing is due for another server)
        conf = s.certs_dir / "renewal" / f"{name}.conf"
        conf.write_text(conf.read_text().replace("https://pebble:14000/dir", test_loop.CA))
    print(f"{args.sites} lineages in {time.perf_counter() - t0:.1f}s under {tmp}")
    sites = "sites:\n" + "".join(f"  - {{domains: [{n}], upstream: 'http://app:5678'}}\n" for n in names)
    s.sites_file.write_text(sites)  # type: ignore[union-attr]
    ratelimits.registered_domain("example.com")
    docker = test_loop.FakeDocker([test_loop.NGINX])
    docker.conf_dir = str(s.conf_dir)
    r = Reconciler(s, docker)  # type: ignore[arg-type]
    r.issuer.runner = test_loop.FakeCertbot(s.certs_dir)
    profiled("first pass (writes every vhost)", r.run_pass, args.top)
    profiled("second pass (nothing changed)", r.run_pass, args.top)
    s.sites_file.write_text(sites + "  - {domains: [added.scale.test], upstream: 'http://app:5678'}\n")  # type: ignore[union-attr]
    profiled("pass after one site was added", r.run_pass, args.top)
    print(f"nginx execs: {docker.execs}")
    nginx_adapter._OWNED_CACHE.clear()  # noqa: SLF001 - a new process starts without it
    r.world.sites_file.keep_parsed()  # (as the loop does after a pass; a restart finds it)
    for t in threading.enumerate():
        if t.name == "sites-file-cache":
            t.join()
    restarted = Reconciler(s, docker)  # type: ignore[arg-type]
    restarted.issuer.runner = r.issuer.runner
    profiled("restart: first pass (all in place)", restarted.run_pass, args.top)
    profiled("restart: second pass (nothing changed)", restarted.run_pass, args.top)
    board, mx = StatusBoard(), metrics.Metrics()
    r.observers.add(board)
    r.observers.add(mx)
    r.run_pass()
    app = OpsApp(board, mx, s.state_dir, r)
    for name, fn in (("/status", app.status), ("/plan", app.plan), ("/metrics", mx.render)):
        profiled(f"GET {name}", fn, 12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
