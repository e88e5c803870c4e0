"""The chaos run (issue 14): many faults at once, in an order drawn from a fixed seed, then invariants.

One stack of its own: the local demo with the sidecar behind the filtering Docker socket proxy
(its only way to the engine, as in test_faults), certbot behind the fault-injecting ACME proxy (as
in test_ratelimits), the conf volume on a small tmpfs (compose.chaos.yml), and alerts going to a
local receiver through ``ALERT_URLS`` with a password in it (a known secret).

For ``CHAOS_SECONDS`` (default 90) a fault comes every 0.5 to 2 s (after the previous one and its
checks), its kind drawn by weight:

- ``site_up`` / ``site_down``: a labelled container of ``c<i>.chaos.test`` started (new, or the stopped
  one again) / stopped or removed;
- ``renew``: ``renew NAME --force`` for a site that is live;
- ``ca_error``: a rule for the ACME proxy: 503s, a dropped connection, or a rate limit with a short
  "retry after";
- ``ca_restart``: the ACME proxy restarted (the CA unreachable for a moment, rules forgotten);
- ``sidecar_kill``: SIGKILL, started again 0.5 to 4 s later (once the Docker API is reachable:
  without it the sidecar exits at start, and a restart policy would bring it back);
- ``nginx_restart``: the nginx container restarted;
- ``disk_full``: the conf volume filled to the last byte for 3 to 8 s (freeing it wakes nothing);
- ``event_drop``: the Docker socket proxy stopped for 2 to 6 s (event stream and API gone).

Last, on the settled stack, the conf volume is filled while a new site's certificate is issued, then
freed (no event the sidecar sees): the site must be served within 30 s.

The seed is printed; ``CHAOS_SEED=N`` replays a run's sequence of draws (what each fault meets
still depends on timing). After every fault: ``nginx -t`` passes and the sidecar is running unless the
test killed it. At the end, with every fault undone and the rules cleared: every declared site is
served with a certificate for its name that chains to Pebble's root (SNI) and its own app's answer,
no removed site is served, ``/status`` has every declared site ``ok`` and live, ``nginx -t`` passes,
nothing is half-written on disk (no temporary file, no staging leftover, every ``sidecar-*.conf``
parses, every ``live/`` lineage complete with a matching key), no certificate was requested again for a
site while its request ran (in one process) or after it succeeded without a failure or a forced
renewal in between (from ``/events`` across the sidecar's restarts), and the secret appears in no output (log,
``/status``, ``/plan``, ``/events``, ``/metrics``, ledger, status file, run logs, alerts received).
The seed, the faults per kind and the checks are recorded in .artifacts/e2e-measurements.json.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import docker.errors
import pytest

from sidecar.core import nginxconf
from sidecar.core.events import Kind

from ..support.net import http_get
from .stack import ARTIFACTS, IMAGES, Event, Stack, dns_names, free_port, new_stack, wait_for
from .test_faults import leftovers, proxy_override, readme_endpoints
from .test_ratelimits import ACMEPROXY_IMAGE, OVERRIDE as ACMEPROXY_OVERRIDE, Proxy

SEED = int(os.environ.get("CHAOS_SEED") or 20261129)
CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS") or 90)
CHAOS_OVERRIDE = Path(__file__).with_name("compose.chaos.yml")
RECEIVER_IMAGE = os.environ.get("E2E_RECEIVER_IMAGE", "local/receiver:test")
SECRET = "chaos-Pa55w0rd-7f3a9c"
POOL = tuple(f"c{i}.chaos.test" for i in range(6))
DEMO = {"a.demo.test": "hello from app-a", "b.demo.test": "hello from app-b", "static.demo.test": "hello from app-b"}
WEIGHTS = {"site_up": 3.0, "site_down": 2.0, "renew": 2.0, "ca_error": 2.0, "ca_restart": 1.0,
           "sidecar_kill": 1.5, "nginx_restart": 1.0, "disk_full": 1.0, "event_drop": 1.0}
CERT_KINDS = (Kind.CERT_REQUESTED, Kind.CERT_ISSUED, Kind.CERT_RENEWED, Kind.CERT_FAILED)
STATE = "/var/lib/nginx-acme-sidecar"
# The file that fills the conf volume: in sidecar-include/, which the sidecar's watch of the conf
# directory ignores, so that freeing the space is no event for it (as on a real full disk).
FILL = "/fill/sidecar-include/.chaos-fill"

# Run in the sidecar's container: is every lineage in live/ whole (four files, key matching the
# certificate, the full chain starting with it, a renewal config)?
LINEAGES = r"""
import json
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import serialization as s
root, names, problems = Path("/etc/letsencrypt"), [], []
pub = lambda k: k.public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
for d in sorted(p for p in (root / "live").glob("*") if p.is_dir()):
    names.append(d.name)
    try:
        pem = {k: (d / f"{k}.pem").read_bytes() for k in ("cert", "chain", "fullchain", "privkey")}
        cert = x509.load_pem_x509_certificate(pem["cert"])
        chain = x509.load_pem_x509_certificates(pem["fullchain"])
        if pub(s.load_pem_private_key(pem["privkey"], None).public_key()) != pub(cert.public_key()):
            problems.append(f"{d.name}: privkey.pem does not match cert.pem")
        if chain[0] != cert or chain[1:] != x509.load_pem_x509_certificates(pem["chain"]):
            problems.append(f"{d.name}: fullchain.pem is not cert.pem + chain.pem")
        if not (root / "renewal" / f"{d.name}.conf").is_file():
            problems.append(f"{d.name}: no renewal/{d.name}.conf")
    except Exception as exc:
        problems.append(f"{d.name}: {type(exc).__name__}: {exc}")
print(json.dumps({"lineages": names, "problems": problems}))
"""


@dataclass
class Force:
    """A ``renew --force`` the test made: the sidecar took it between ``before`` and ``after``."""
    before: datetime
    after: datetime
    used: bool = False


def unexplained_requests(history: list[Event], forces: dict[str, list[Force]]) -> list[str]:
    """Certificate requests for a site that nothing explains: one while the site's previous request
    (in the same sidecar process) has no outcome yet, or one after a success with no failure and no
    forced renewal by the test in between (a killed request may be made again by the next process;
    a certificate on disk is never asked for again, restart or not)."""
    found: list[str] = []
    last: dict[str, Event] = {}
    for e in history:
        if e.kind not in CERT_KINDS:
            continue
        prev = last.get(e.site)
        if e.kind == Kind.CERT_REQUESTED:
            # The sidecar drops a site's "forced" mark when it starts a request for it.
            armed = [f for f in forces.get(e.site, []) if not f.used and f.before <= e.at]
            if prev is not None and prev.kind == Kind.CERT_REQUESTED and prev.run == e.run:
                found.append(f"{e.site}: requested at {e.at:%H:%M:%S.%f} while its request of "
                             f"{prev.at:%H:%M:%S.%f} was still running")
            elif prev is not None and prev.kind in (Kind.CERT_ISSUED, Kind.CERT_RENEWED) and not armed:
                found.append(f"{e.site}: requested at {e.at:%H:%M:%S.%f} after its certificate of "
                             f"{prev.at:%H:%M:%S.%f}, with no failure or forced renewal in between")
            for f in armed:
                if prev is not None and prev.kind in (Kind.CERT_ISSUED, Kind.CERT_RENEWED) or f.after <= e.at:
                    f.used = True
                    break
        last[e.site] = e
    return found


@dataclass
class Chaos:
    s: Stack
    proxy: Proxy
    filler: Any
    rng: random.Random
    faults: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    apps: dict[str, Any] = field(default_factory=dict)  # chaos name -> its container (running or stopped)
    running: set[str] = field(default_factory=set)
    ever: set[str] = field(default_factory=set)
    forces: dict[str, list[Force]] = field(default_factory=dict)
    undo: dict[str, tuple[float, Callable[[], bool]]] = field(default_factory=dict)  # what -> (due, do it)
    killed: bool = False
    proxy_down: bool = False
    disk_full: bool = False
    timeline: list[str] = field(default_factory=list)
    sidecar_started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    t0: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f}s {what}"
        self.timeline.append(line)
        print(line, flush=True)

    # -- reading the sidecar (when it is up) ---------------------------------------------
    def read_events(self) -> bool:
        try:
            self.s.cursor()
            return True
        except (OSError, AssertionError):
            return False

    def settled(self) -> bool:
        """The sidecar process started last has finished a pass (its start-up is behind it)."""
        try:
            updated = self.s.status()["updated"]
        except (OSError, AssertionError):
            return False
        return bool(updated) and datetime.fromisoformat(updated) > self.sidecar_started

    def live_sites(self) -> list[str]:
        try:
            rows = self.s.status()["rows"]
        except (OSError, AssertionError):
            return []
        return sorted(n for n, r in rows.items() if r.get("live") and (n in DEMO or n in self.running))

    # -- the faults ----------------------------------------------------------------------------
    def inject(self, kind: str, r: list[float]) -> bool:
        """One fault of ``kind``; ``r``: this step's random numbers (drawn whatever the kind). False: not
        applicable now (e.g. renew while the sidecar is down)."""
        s = self.s
        if kind == "site_up":
            free = [n for n in POOL if n not in self.running]
            if not free:
                return False
            name = free[int(r[0] * len(free))]
            c = self.apps.get(name)
            again = name in self.ever
            if c is None:
                c = s.run_app(name.split(".")[0], {"acme.domains": name, "acme.port": "5678"}, f"chaos {name}")
                self.apps[name] = c
            else:
                c.start()
            self.running.add(name)
            self.ever.add(name)
            self.note(f"site_up {name}{' (again)' if again else ''}")
            return True
        if kind == "site_down":
            up = sorted(self.running)
            if not up:
                return False
            name = up[int(r[0] * len(up))]
            if r[1] < 0.5:
                self.apps[name].stop(timeout=1)
                how = "stopped"
            else:
                self.apps.pop(name).remove(force=True)
                how = "removed"
            self.running.discard(name)
            self.note(f"site_down {name} ({how})")
            return True
        if kind == "renew":
            if self.killed:
                return False
            live = self.live_sites()
            if not live:
                return False
            name = live[int(r[0] * len(live))]
            before = datetime.now(timezone.utc)
            code, out = s.exec("sidecar", "python3", "-m", "sidecar", "renew", name, "--force")
            if code != 0:
                self.note(f"renew {name}: not taken ({out.strip()[-200:]})")
                return False
            self.forces.setdefault(name, []).append(Force(before, datetime.now(timezone.utc)))
            self.note(f"renew {name} --force")
            return True
        if kind == "ca_error":
            targets = sorted(self.running) or list(POOL)
            rule: dict[str, Any]
            if r[0] < 0.35:
                rule = {"resource": "newOrder", "action": "error5xx", "count": 1 + int(r[1] * 3)}
            elif r[0] < 0.55:
                rule = {"resource": "finalize", "action": "error5xx", "count": 1}
            elif r[0] < 0.75:
                rule = {"resource": ["challenge", "authz", "order"], "action": "drop", "count": 1 + int(r[1] * 2)}
            else:
                rule = {"resource": "newOrder", "identifier": targets[int(r[1] * len(targets))],
                        "action": "ratelimit", "limit": "exact_set", "retry_after": 3 + int(r[2] * 6)}
            self.proxy.rules(rule)
            self.note(f"ca_error {json.dumps(rule, sort_keys=True)}")
            return True
        if kind == "ca_restart":
            s.container("acmeproxy").restart(timeout=1)
            wait_for("the ACME proxy back", self.proxy.healthy, timeout=30, interval=0.2)
            self.note("ca_restart")
            return True
        if kind == "sidecar_kill":
            if self.killed:
                return False
            self.read_events()  # what it said so far outlives it
            s.container("sidecar").kill(signal="SIGKILL")
            self.killed = True
            self.later("sidecar_start", 0.5 + r[0] * 3.5, self.start_sidecar)
            self.note("sidecar_kill")
            return True
        if kind == "nginx_restart":
            s.container("nginx").restart(timeout=1)
            self.note("nginx_restart")
            return True
        if kind == "disk_full":
            if self.disk_full:
                return False
            code, out = self.filler.exec_run(["sh", "-c", f"dd if=/dev/zero of={FILL} bs=64k 2>&1; df -k /fill"])
            text = out.decode("utf-8", "replace")
            assert "No space left" in text, text  # (the volume really is full)
            self.disk_full = True
            self.later("disk_free", 3 + r[0] * 5, self.free_disk)
            self.note("disk_full")
            return True
        if kind == "event_drop":
            if self.proxy_down or self.killed or not self.settled():
                return False  # (without the Docker API at start the sidecar exits, by design)
            s.container("dockerproxy").stop(timeout=1)
            self.proxy_down = True
            self.later("dockerproxy_start", 2 + r[0] * 4, self.start_proxy)
            self.note("event_drop (Docker socket proxy stopped)")
            return True
        raise ValueError(kind)

    # -- undoing them ------------------------------------------------------------------------------
    def later(self, what: str, seconds: float, do: Callable[[], bool]) -> None:
        self.undo[what] = (time.monotonic() + seconds, do)

    def start_sidecar(self) -> bool:
        if self.proxy_down:
            return False  # (it would exit at start without the Docker API: try again at the next tick)
        self.sidecar_started = datetime.now(timezone.utc)
        self.s.container("sidecar").start()
        self.killed = False
        self.note("sidecar started again")
        return True

    def free_disk(self) -> bool:
        code, out = self.filler.exec_run(["rm", "-f", FILL])
        assert code == 0, out
        self.disk_full = False
        self.note("disk freed")
        return True

    def start_proxy(self) -> bool:
        self.s.container("dockerproxy").start()
        self.proxy_down = False
        self.note("Docker socket proxy started again")
        return True

    def run_due(self, everything: bool = False) -> None:
        for what, (due, do) in sorted(self.undo.items(), key=lambda kv: kv[1][0]):
            if (everything or due <= time.monotonic()) and do():
                del self.undo[what]

    # -- after every fault -------------------------------------------------------------------------
    def checkpoint(self) -> None:
        s = self.s
        nginx = s.container("nginx")
        wait_for("nginx running", lambda: (nginx.reload(), nginx.status == "running")[1], timeout=30, interval=0.1)
        code, out = s.exec("nginx", "nginx", "-t")
        assert code == 0, f"nginx -t failed at a check point:\n{out}\n" + "\n".join(self.timeline[-10:])
        self.checks["nginx -t at a check point"] += 1
        if not self.killed:
            sidecar = s.container("sidecar")
            sidecar.reload()
            assert sidecar.status in ("running", "restarting"), (
                f"the sidecar stopped by itself ({sidecar.attrs['State']}):\n" + s.logs()[-3000:])
            self.checks["sidecar running unless killed"] += 1
            self.read_events()


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Proxy]]:
    client = docker.from_env()
    try:
        for image in (ACMEPROXY_IMAGE, RECEIVER_IMAGE, "local/dockerproxy:test"):
            if not client.images.list(name=image):
                raise RuntimeError(f"image missing: {image}: run bash tests/build-images.sh")
    finally:
        client.close()
    s = new_stack(Path(tmp_path_factory.mktemp("chaos")))
    override = s.sites_dir.parent / f"{s.project}-dockerproxy.yml"
    override.write_text(proxy_override(readme_endpoints()))
    s.extra_files += [override, ACMEPROXY_OVERRIDE, CHAOS_OVERRIDE]
    proxy = Proxy(free_port())
    receiver = f"{s.project}-receiver"
    s.env.update({
        "ACMEPROXY_IMAGE": ACMEPROXY_IMAGE,
        "ACMEPROXY_PORT": str(proxy.port),
        # The last step repeats: a site failing again and again is retried every 10 s, never a day later.
        "BACKOFF_SCHEDULE": "2s,4s,6s,10s",
        "CERTBOT_TIMEOUT": "30",
        "ALERT_URLS": f"json://alerts:{SECRET}@{receiver}:8000/hooks/acme",
    })
    try:
        started = time.monotonic()
        s.compose("up", "-d", "--no-build", "nginx")
        c = s.client.containers.run(RECEIVER_IMAGE, name=receiver, network=s.network, detach=True,
                                    labels={"e2e.project": s.project})
        s.started.append(c.id)
        s.compose("up", "-d", "--no-build")
        wait_for("Pebble's root", s.fetch_root, timeout=60, interval=0.5)
        for host in DEMO:
            wait_for(f"https://{host}", lambda h=host: s.https(h).status == 200, timeout=120, interval=0.3)
        s.record("chaos_stack_up_seconds", round(time.monotonic() - started, 2))
        yield s, proxy
    except BaseException:
        print("---- sidecar logs ----\n" + s.logs()[-8000:])
        raise
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        for service in ("sidecar", "acmeproxy", "dockerproxy", "nginx"):
            try:
                (ARTIFACTS / f"chaos-{service}.log").write_text(s.logs(service))
            except Exception as exc:  # noqa: BLE001 - best effort, never hide the real error
                print(f"could not save the {service} log: {exc}")
        s.down()
        s.client.close()


def test_chaos_run_keeps_every_invariant(chaos_stack: tuple[Stack, Proxy]) -> None:
    s, proxy = chaos_stack
    print(f"chaos seed {SEED} (replay: CHAOS_SEED={SEED}), {CHAOS_SECONDS:.0f} s of faults")
    rng = random.Random(SEED)
    # Holds the conf volume for the disk-full fault (the sidecar and nginx come and go).
    filler = s.client.containers.run(IMAGES["SIDECAR_IMAGE"], ["-c", "sleep infinity"], entrypoint="sh",
                                     name=f"{s.project}-filler", detach=True, network_mode="none",
                                     labels={"e2e.project": s.project},
                                     volumes={f"{s.project}_conf": {"bind": "/fill", "mode": "rw"}})
    s.started.append(filler.id)
    ch = Chaos(s, proxy, filler, rng)
    ch.read_events()
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    started = time.monotonic()
    end = started + CHAOS_SECONDS
    next_fault = started
    while time.monotonic() < end:
        ch.run_due()
        if time.monotonic() >= next_fault:
            kind = rng.choices(kinds, weights)[0]
            draws = [rng.random() for _ in range(3)]
            gap = rng.uniform(0.5, 2.0)
            if ch.inject(kind, draws):
                ch.faults[kind] += 1
            else:
                ch.skipped[kind] += 1
            ch.checkpoint()
            next_fault = time.monotonic() + gap
        due = min([next_fault, *(d for d, _ in ch.undo.values())])
        time.sleep(max(0.05, min(0.25, due - time.monotonic())))  # (pacing the schedule, not a check)
    chaos_seconds = time.monotonic() - started

    # Every fault undone, the CA's rules cleared; then everything declared must come back by itself.
    ch.run_due(everything=True)
    if ch.undo:  # (the sidecar waited for the socket proxy, which is back now)
        ch.run_due(everything=True)
    assert not ch.undo, ch.undo
    proxy._call("DELETE", "/rules")
    ch.note("every fault undone")
    settle_started = time.monotonic()
    wait_for("the sidecar's API", ch.read_events, timeout=60, interval=0.3)
    declared = {**DEMO, **{n: f"chaos {n}" for n in sorted(ch.running)}}

    def all_served() -> bool:
        for host, text in declared.items():
            r = s.https(host, timeout=3)
            if r.status != 200 or r.body.strip() != text or host not in dns_names(r.cert):
                return False
        return True

    try:
        wait_for("every declared site served", all_served, timeout=150, interval=0.5)
    except AssertionError:
        print("\n".join(ch.timeline))
        print(json.dumps(s.status()["sites"], indent=1, default=str)[-4000:])
        raise
    settle_seconds = time.monotonic() - settle_started

    # One last fault, on the quiet stack: the conf volume full while a new site's certificate is issued.
    # Freeing the space is no event for the sidecar: it must write the site's file again by itself.
    since = s.cursor()
    ch.inject("disk_full", [0.0, 0.0, 0.0])
    ch.faults["disk_full"] += 1
    ch.undo.clear()  # (freed below, once the write has failed)
    late = "late.chaos.test"
    ch.apps[late] = s.run_app("late", {"acme.domains": late, "acme.port": "5678"}, f"chaos {late}")
    ch.running.add(late)
    ch.ever.add(late)
    issued = s.wait_event(Kind.CERT_ISSUED, late, since, timeout=90)
    s.wait_event(Kind.NGINX_REJECTED, since=issued.seq - 1, timeout=30)  # its file could not be written
    ch.free_disk()
    freed = time.monotonic()
    wait_for(f"{late} served after the disk was freed", lambda: s.https(late, timeout=3).status == 200,
             timeout=30, interval=0.2)
    late_seconds = time.monotonic() - freed
    ch.checks["a site issued while the disk was full served once freed, with no event"] += 1
    declared[late] = f"chaos {late}"
    assert all_served()
    ch.checks["declared sites served with a certificate from Pebble's root (SNI, own app)"] += len(declared)

    # /status agrees: each declared site ok and live.
    rows = wait_for("/status with every declared site ok and live", lambda: (lambda rs: rs if all(
        rs.get(h, {}).get("state") == "ok" and rs.get(h, {}).get("live") for h in declared) else None)(
        s.status()["rows"]), timeout=30, interval=0.5)
    ch.checks["/status rows ok and live"] += len(declared)
    gone = sorted(ch.ever - ch.running)
    for host in gone:
        assert host not in rows, rows[host]
        with pytest.raises(OSError):
            s.https(host, timeout=3)
    ch.checks["removed sites not served"] += len(gone)

    code, out = s.exec("nginx", "nginx", "-t")
    assert code == 0, out
    ch.checks["nginx -t at the end"] += 1
    assert leftovers(s) == []
    ch.checks["no temporary files, staging leftovers, -0001 lineages or probes"] += 1

    code, listing = s.exec("sidecar", "sh", "-c", "cd /etc/nginx/conf.d && ls sidecar-*.conf")
    assert code == 0, listing
    for name in listing.split():
        code, text = s.exec("sidecar", "cat", f"/etc/nginx/conf.d/{name}")
        assert code == 0, text
        nginxconf.parse(text, name)  # raises on half a file
        ch.checks["sidecar-*.conf files parse"] += 1
    code, out = s.exec("sidecar", "python3", "-c", LINEAGES)
    assert code == 0, out
    lineages = json.loads(out)
    assert lineages["problems"] == [], lineages
    assert set(declared) <= set(lineages["lineages"]), lineages
    ch.checks["live/ lineages complete, key matching"] += len(lineages["lineages"])

    history = s.events()
    cert_events = Counter(e.kind.value if isinstance(e.kind, Kind) else e.kind for e in history
                          if e.kind in CERT_KINDS)
    doubles = unexplained_requests(history, ch.forces)
    assert doubles == [], doubles
    ch.checks["certificate requests explained (sites)"] += len({e.site for e in history if e.kind in CERT_KINDS})

    # The secret is in ALERT_URLS and nowhere else.
    outputs = {
        "sidecar log": s.logs(),
        "/events": json.dumps([(e.kind, e.site, e.message, e.details) for e in history], default=str),
        "/status": json.dumps(s.api("/status")),
        "/plan": json.dumps(s.api("/plan")),
        "/metrics": http_get(int(s.env["STATUS_PORT_HOST"]), "127.0.0.1", "/metrics")[2],
    }
    code, out = s.exec("sidecar", "sh", "-c", f"grep -rl -- '{SECRET}' {STATE} /etc/nginx/conf.d /etc/letsencrypt "
                       "; echo files-checked")
    outputs["state, conf and certificate volumes (files naming it)"] = out.replace("files-checked", "")
    code, received = s.client.containers.get(f"{s.project}-receiver").exec_run(
        ["python3", "/usr/local/bin/receiver.py", "dump"])
    assert code == 0, received
    alerts = json.loads(received)
    outputs["alerts received"] = json.dumps(alerts)
    leaks = sorted(where for where, text in outputs.items() if SECRET in text)
    assert leaks == [], leaks
    assert alerts["webhook"], "no alert was delivered with the secret-bearing URL"
    ch.checks["outputs free of the secret"] += len(outputs)

    wall = round(time.monotonic() - ch.t0, 1)
    s.record("chaos", {
        "seed": SEED, "chaos_seconds": round(chaos_seconds, 1), "settle_seconds": round(settle_seconds, 1),
        "test_seconds": wall, "disk_full_issuance_served_after_freeing_s": round(late_seconds, 1),
        "faults": dict(ch.faults), "faults_total": sum(ch.faults.values()),
        "not_applicable": dict(ch.skipped), "checks": dict(ch.checks), "certificate_events": dict(cert_events),
        "forced_renewals": sum(len(v) for v in ch.forces.values()), "sidecar_processes": len(s.runs),
        "sites_declared_at_the_end": sorted(declared), "alerts_delivered": len(alerts["webhook"]),
    })
    print(f"chaos seed {SEED}: {sum(ch.faults.values())} faults {dict(ch.faults)}; settled in {settle_seconds:.1f}s; "
          f"checks {dict(ch.checks)}")

