"""Faults survived (issue 5), end to end: real Docker, nginx, certbot and Pebble.

Each class runs on a stack of its own (the local demo under a fresh Compose project),
because the tests stop Pebble, re-create nginx, kill the sidecar or put a proxy
between it and the Docker engine. Every test leaves its stack serving again, and
asserts that it does. The real Docker engine is shared with others: nothing here
restarts it; the event stream is cut by restarting a socket proxy instead.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import docker.errors
import pytest
import yaml

from sidecar.core.events import Kind

from .stack import ARTIFACTS, DEMO, IMAGES, ROOT, Stack, new_stack, wait_for

OWNER_LABEL = "nginx-acme-sidecar.owner"
DEMO_SITES = ("a.demo.test", "b.demo.test", "static.demo.test")
APP = {"acme.port": "5678"}
WRK_IMAGE = "local/wrk:test"
PROXY_IMAGE = "local/dockerproxy:test"
# What certbot prints when the CA no longer knows its stored account (Pebble after a restart).
ACCOUNT_GONE = re.compile(r"\bAccount \S+ not found\b|accountDoesNotExist|\baccount at \S+ does not exist\b", re.I)


# -- helpers ---------------------------------------------------------------------
def start_stack(tmp: Path, env: dict[str, str] | None = None, override: str = "") -> Stack:
    """The demo, up and serving its three sites; ``override``: a Compose file layered over it."""
    s = new_stack(tmp)
    # Quick retries so a test sees the second and third attempt (the demo compose passes it on).
    s.env["BACKOFF_SCHEDULE"] = "3s,6s,1d"
    s.env.update(env or {})
    if override:
        path = s.sites_dir.parent / f"{s.project}-override.yml"
        path.write_text(override)
        s.extra_files.append(path)
    started = time.monotonic()
    try:
        s.compose("up", "-d", "--no-build")
        wait_for("Pebble's root", s.fetch_root, timeout=60, interval=0.5)
        for host in DEMO_SITES:
            wait_for(f"https://{host}", lambda h=host: s.https(h).status == 200, timeout=90)
    except BaseException:
        dump(s)
        s.down()
        raise
    s.record("faults_stack_up_seconds", round(time.monotonic() - started, 2))
    return s


def dump(s: Stack) -> None:
    try:
        print("---- sidecar logs ----\n" + s.logs()[-8000:])
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        print(f"(no sidecar logs: {exc})")


def serving(s: Stack, host: str) -> bool:
    try:
        return s.https(host, timeout=3).status == 200
    except (OSError, ssl.SSLError):
        return False


def refused(s: Stack, host: str) -> bool:
    try:
        s.https(host, timeout=3)
    except ssl.SSLError:
        return True
    return False


def certbot_containers(s: Stack, running_only: bool = False) -> list[Any]:
    owner = s.container("sidecar").name
    return s.client.containers.list(all=not running_only, filters={"label": f"{OWNER_LABEL}={owner}"})


def certbot_running(s: Stack) -> list[Any]:
    """The sidecar's certbot containers with a certbot process in them right now."""
    busy = []
    for c in certbot_containers(s, running_only=True):
        try:
            procs = c.top(ps_args="-eo pid,args").get("Processes") or []
        except docker.errors.APIError:
            continue  # gone meanwhile
        if any("certbot" in " ".join(p) and "certonly" in " ".join(p) for p in procs):
            busy.append(c)
    return busy


def no_certbot_left(s: Stack) -> bool:
    """No certbot run going on, and no container but the (one) idle certbot container."""
    return not certbot_running(s) and len(certbot_containers(s)) <= 1


def is_certbot_run(event: dict[str, Any]) -> bool:
    """A certificate request by the sidecar: an exec of its run script (or a container per run)."""
    action = str(event.get("Action") or event.get("status") or "")
    if action.startswith("exec_start"):
        return "certbot-run" in action and " certonly " in action
    return action == "create" and bool((event.get("Actor") or {}).get("Attributes", {}).get("nginx-acme-sidecar.site"))


def leftovers(s: Stack) -> list[str]:
    """Half-written or orphaned files anywhere the sidecar writes (empty when clean).

    A running sidecar has a temporary file open now and then (status.json is rewritten
    every pass): only what is still there a second later counts."""
    def scan() -> set[str]:
        code, out = s.exec(
            "sidecar", "find", "/etc/letsencrypt", "/etc/nginx/conf.d", "/var/lib/nginx-acme-sidecar",
            "/var/www/acme",
            "(", "-name", ".sidecar-tmp-*", "-o", "-path", "/etc/letsencrypt/.staging/*",
            "-o", "-name", "*-0001*", "-o", "-name", "sidecar-probe-*", ")",
        )
        assert code == 0, out
        return set(out.split())

    remaining = scan()
    deadline = time.monotonic() + 1.0
    while remaining and time.monotonic() < deadline:
        time.sleep(0.2)
        remaining &= scan()
    return sorted(remaining)


def nginx_test(s: Stack) -> tuple[int, str]:
    return s.exec("nginx", "nginx", "-t")


def log_line(s: Stack, pattern: str, since: float | None = None, timeout: float = 60) -> str:
    """For what has no event (yet): the first line of the sidecar's log matching ``pattern``."""
    rx = re.compile(pattern)
    return str(wait_for(f"log line /{pattern}/", lambda: next(
        (ln for ln in s.logs(since=since).splitlines() if rx.search(ln)), None), timeout=timeout, interval=0.2))


def parse_wrk(output: str) -> dict[str, Any]:
    """Counts from wrk's summary (with /etc/wrk/status.lua): requests, statuses, socket errors."""
    def num(pattern: str) -> int:
        m = re.search(pattern, output)
        return int(m.group(1)) if m else 0

    requests = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", output)  # (wrk says 1.09m past a minute)
    assert requests and "status 200:" in output, output
    errors = dict(re.findall(r"(connect|read|write|timeout) (\d+)", output.split("Socket errors:", 1)[-1]
                             .splitlines()[0] if "Socket errors:" in output else ""))
    return {
        "requests": int(requests.group(1)),
        "status_200": num(r"status 200: (\d+)"),
        "other_status": num(r"other: (\d+)"),
        "non_2xx_3xx": num(r"Non-2xx or 3xx responses: (\d+)"),
        "socket_errors": sum(int(v) for v in errors.values()),
        "socket_errors_by_kind": {k: int(v) for k, v in errors.items()},
        "requests_per_second": float(m.group(1)) if (m := re.search(r"Requests/sec:\s+([\d.]+)", output)) else 0.0,
    }


def serial(s: Stack, host: str) -> int:
    return int(s.https(host).cert.serial_number)


@pytest.fixture(scope="class")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own for each class of tests."""
    st = start_stack(Path(tmp_path_factory.mktemp("faults")))
    try:
        yield st
    finally:
        st.down()


@pytest.fixture(autouse=True)
def keep_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """The sidecar's logs of each test, in .artifacts/faults/<test>.log (for failures and CI)."""
    since = time.time()
    yield
    st = request.node.funcargs.get("s")
    if isinstance(st, Stack):
        out = ARTIFACTS / "faults"
        out.mkdir(parents=True, exist_ok=True)
        try:
            (out / f"{request.node.name}.log").write_text(st.logs(since=since - 1))
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            print(f"(no sidecar logs: {exc})")


# -- one stack for the faults that leave the sidecar running -------------------------
class TestOnOneStack:
    """Zero downtime, event storm, nginx restarted and re-created, CA outage (in that order:
    the CA outage changes Pebble's root, so it comes last)."""

    def test_zero_downtime_under_wrk_while_sites_come_and_go_and_certificates_rotate(self, s: Stack) -> None:
        """wrk hits https://a.demo.test through nginx while the sidecar reloads nginx 20+ times
        (sites added to and removed from the sites file) and rotates a.demo.test's own
        certificate twice (``renew --force``).

        Two wrk runs side by side: one opening a new TLS connection per request (asserted:
        no failed request, no socket error), one on keep-alive connections (recorded; only
        its statuses are asserted: a graceful ``nginx -s reload`` closes idle keep-alive
        connections, a request racing that close fails and HTTP clients retry it, wrk
        counts it as a read error)."""
        base = "sites:\n  - domains: [static.demo.test]\n    upstream: http://app-b:5678\n"
        churn = ("churn0.demo.test", "churn1.demo.test")
        with_churn = base + "".join(f"  - domains: [{d}]\n    upstream: http://app-a:5678\n" for d in churn)
        s.write_sites(with_churn)
        for d in churn:
            wait_for(d, lambda d=d: serving(s, d), timeout=60)
        nginx_ip = next(iter(s.container("nginx").attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]

        def wrk(name: str, *extra: str) -> Any:
            c = s.client.containers.run(
                WRK_IMAGE, ["-t1", "-c4", "-d600s", "--timeout", "5s", "-s", "/etc/wrk/status.lua", *extra,
                            "https://a.demo.test/"],
                name=f"{s.project}-{name}", network=s.network, extra_hosts={"a.demo.test": nginx_ip},
                nano_cpus=400_000_000, detach=True, labels={"e2e.project": s.project},
            )
            s.started.append(c.id)
            return c

        serial_before = serial(s, "a.demo.test")
        since, started = s.cursor(), time.time()
        fresh = wrk("wrk-close", "-H", "Connection: close")
        keepalive = wrk("wrk-keepalive")
        time.sleep(1)  # (wrk's start-up, not a check: it says nothing until it stops)
        rotations = 0
        try:
            for round_ in range(10):
                s.write_sites(base)
                wait_for("churn sites gone", lambda: all(refused(s, d) for d in churn), timeout=30)
                s.write_sites(with_churn)
                wait_for("churn sites back", lambda: all(serving(s, d) for d in churn), timeout=30)
                if round_ in (2, 6):
                    prev = serial(s, "a.demo.test")
                    code, out = s.exec("sidecar", "python3", "-m", "sidecar", "renew", "a.demo.test", "--force")
                    assert code == 0, out
                    wait_for("a.demo.test rotated", lambda p=prev: serial(s, "a.demo.test") != p, timeout=40)
                    rotations += 1
        finally:
            for c in (fresh, keepalive):
                c.kill(signal="SIGINT")
            for c in (fresh, keepalive):
                c.wait(timeout=30)
        seconds = round(time.time() - started, 1)
        reloads = len(s.events(since, Kind.RELOAD))
        results = {name: parse_wrk(c.logs().decode("utf-8", "replace"))
                   for name, c in (("new_connection_per_request", fresh), ("keepalive", keepalive))}
        s.record("zero_downtime", {"seconds": seconds, "reloads": reloads, "certificate_rotations": rotations,
                                   "wrk": results})
        print(results)
        assert serial(s, "a.demo.test") != serial_before
        assert reloads >= 20, reloads
        r = results["new_connection_per_request"]
        assert r["requests"] > 200, r
        assert r["status_200"] == r["requests"] and r["other_status"] == 0 and r["socket_errors"] == 0, r
        k = results["keepalive"]
        assert k["requests"] > 200 and k["other_status"] == 0, k

    def test_event_storm_makes_no_duplicate_certbot_runs_and_few_reloads(self, s: Stack) -> None:
        """50 labelled containers (10 sites x 5 replicas) start, stop, start and go, in quick succession."""
        sites = [f"storm{i}.demo.test" for i in range(10)]
        owner = s.container("sidecar").name
        # Count certbot runs as they start (the engine keeps too few past events).
        seen: list[dict[str, Any]] = []
        stream = s.client.events(decode=True, filters={
            "type": "container", "event": ["create", "exec_start"], "label": f"{OWNER_LABEL}={owner}"})
        watcher = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
        watcher.start()
        since, started = s.cursor(), time.time()
        with ThreadPoolExecutor(8) as pool:
            apps = list(pool.map(
                lambda n: s.run_app(f"storm{n}", {"acme.domains": sites[n % 10], **APP}, f"storm {n % 10}"),
                range(50),
            ))
            for d in sites:
                wait_for(d, lambda d=d: serving(s, d), timeout=120, interval=0.5)
            first_wave = s.cursor()
            list(pool.map(lambda a: a.stop(timeout=1), apps))
            wait_for("storm sites gone", lambda: all(refused(s, d) for d in sites), timeout=60, interval=0.5)
            list(pool.map(lambda a: a.start(), apps))
            for d in sites:
                wait_for(d, lambda d=d: serving(s, d), timeout=60, interval=0.5)
            list(pool.map(lambda a: a.remove(force=True), apps))
        wait_for("storm sites gone", lambda: all(refused(s, d) for d in sites), timeout=60, interval=0.5)
        # Every site had its certificate before the first wave was served: no request after it,
        # also not in the next second (time for Docker's event stream to bring any late run too).
        s.no_event(Kind.CERT_REQUESTED, since=first_wave, deadline=1)
        until = time.time()
        stream.close()
        watcher.join(5)
        created = [e for e in seen if is_certbot_run(e)]
        requests = {d: len(s.events(since, Kind.CERT_REQUESTED, d)) for d in sites}
        reloads = len(s.events(since, Kind.RELOAD))
        reloads_after_issuance = len(s.events(first_wave, Kind.RELOAD))
        s.record("event_storm", {"containers": 50, "sites": 10, "certbot_runs": len(created),
                                 "reloads": reloads, "reloads_after_issuance": reloads_after_issuance,
                                 "seconds": round(until - started, 1)})
        assert requests == {d: 1 for d in sites}
        assert len(created) == len(sites)
        # 200 container events (start, stop, start, remove of 50 containers) and 40 changes of
        # upstream lists. A pass reloads at most once, a burst of events settles into one pass
        # (debounce), and while certbot runs reloads come at most every RELOAD_INTERVAL (15 s).
        # So reloads follow passes, not events: 9 to 15 measured here (a pass takes 1-3 s on
        # this busy 2-core machine, a wave of 50 `docker start`s 5-20 s). 25 leaves room for a
        # slower machine; one reload per event (200) or per container (50) is what this catches.
        assert reloads <= 25, reloads

    def test_nginx_restarted_or_recreated_empty_gets_every_site_back(self, s: Stack) -> None:
        serials = {h: serial(s, h) for h in DEMO_SITES}

        started = time.monotonic()
        s.container("nginx").restart(timeout=2)
        for h in DEMO_SITES:
            wait_for(f"{h} after restart", lambda h=h: serving(s, h), timeout=30)
        restart_seconds = time.monotonic() - started

        # Re-created with an empty conf.d: the files are gone and nginx starts with none of them.
        s.compose("rm", "-sf", "nginx")
        code, out = s.exec("sidecar", "sh", "-c", "rm -f /etc/nginx/conf.d/sidecar-*.conf; ls /etc/nginx/conf.d")
        assert code == 0 and not re.search(r"^sidecar-.*\.conf$", out, re.M), out
        started = time.monotonic()
        s.compose("up", "-d", "--no-deps", "nginx")
        for h in DEMO_SITES:
            wait_for(f"{h} after re-create", lambda h=h: serving(s, h), timeout=30)
        recreate_seconds = time.monotonic() - started
        s.record("nginx_faults", {"restart_to_all_served_seconds": round(restart_seconds, 2),
                                  "recreate_empty_to_all_served_seconds": round(recreate_seconds, 2)})
        assert {h: serial(s, h) for h in DEMO_SITES} == serials
        assert nginx_test(s)[0] == 0
        assert restart_seconds < 20 and recreate_seconds < 20

    def test_ca_unreachable_then_back(self, s: Stack) -> None:
        serials = {h: serial(s, h) for h in DEMO_SITES}
        s.compose("stop", "-t", "1", "pebble")
        since = s.cursor()
        s.run_app("cadown", {"acme.domains": "cadown.demo.test", **APP}, "ca was down")
        failed = s.wait_event(Kind.CERT_FAILED, "cadown.demo.test", since, timeout=60)
        # what failed, why, and when it is tried again
        assert failed.details["error"] and datetime.fromisoformat(failed.details["next_attempt"]) > failed.at, failed
        assert s.container("sidecar").status == "running"
        for h in DEMO_SITES:
            assert serving(s, h) and serial(s, h) == serials[h]
        assert refused(s, "cadown.demo.test")

        old_root = s.root_pem
        s.compose("start", "pebble")
        # A restarted Pebble has a new root and has forgotten the account.
        new_root = wait_for("Pebble's new root", s.fetch_root, timeout=60, interval=0.5)
        s.root_pem = old_root + new_root
        wait_for("cadown.demo.test", lambda: serving(s, "cadown.demo.test"), timeout=60, interval=0.5)
        s.wait_event(Kind.CERT_ISSUED, "cadown.demo.test", since, timeout=10)
        # The runs kept for the site (what `status` points at): in one, certbot said the CA no longer
        # knows the stored account ("Account <url> not found.", or RFC 8555's accountDoesNotExist);
        # a later one, with a newly registered account, succeeded.
        runs = s.certbot_runs("cadown.demo.test")
        gone = [i for i, (code, text) in enumerate(runs) if code != 0 and ACCOUNT_GONE.search(text)]
        assert gone and runs[-1][0] == 0 and gone[-1] < len(runs) - 1, [(c, x[-300:]) for c, x in runs]
        for h in DEMO_SITES:
            assert serial(s, h) == serials[h]
        failures = s.events(since, Kind.CERT_FAILED, "cadown.demo.test")
        s.record("ca_outage", {"failed_attempts_before_success": len(failures)})
        assert 1 <= len(failures) <= 2, failures


# -- the sidecar killed --------------------------------------------------------------
class TestSidecarKilled:
    def test_sigkill_during_an_issuance(self, s: Stack) -> None:
        sidecar = s.container("sidecar")
        since, killed_run = s.cursor(), s.runs[-1]
        s.run_app("kill1", {"acme.domains": "kill1.demo.test", **APP}, "survived")
        orphan = wait_for("certbot running", lambda: certbot_running(s), timeout=60, interval=0.02)
        sidecar.kill(signal="SIGKILL")
        still_running = [c.id for c in certbot_running(s)]
        sidecar.start()
        wait_for("kill1.demo.test", lambda: serving(s, "kill1.demo.test"), timeout=60, interval=0.5)
        wait_for("no certbot run left", lambda: no_certbot_left(s), timeout=15)
        # The killed sidecar's certbot container (and the run in it) was removed at the restart.
        assert orphan[0].id not in [c.id for c in certbot_containers(s)]
        s.record("sigkill_issuance", {"certbot_running_at_kill": bool(still_running),
                                      "orphan": orphan[0].short_id})
        assert leftovers(s) == []
        assert nginx_test(s)[0] == 0
        issued = s.wait_event(Kind.CERT_ISSUED, "kill1.demo.test", since, timeout=10)
        assert issued.run != killed_run  # by the restarted sidecar

        # Killed during a renewal in place (certbot works in /etc/letsencrypt itself): the
        # lineage stays usable, and the next renewal works and goes live.
        before = serial(s, "kill1.demo.test")
        code, out = s.exec("sidecar", "python3", "-m", "sidecar", "renew", "kill1.demo.test", "--force")
        assert code == 0, out
        wait_for("certbot running", lambda: certbot_running(s), timeout=30, interval=0.02)
        sidecar.kill(signal="SIGKILL")
        sidecar.start()
        wait_for("status server", lambda: s.exec("sidecar", "python3", "-m", "sidecar", "renew", "kill1.demo.test",
                                                 "--force")[0] == 0, timeout=30, interval=0.5)
        wait_for("kill1.demo.test renewed", lambda: serial(s, "kill1.demo.test") != before, timeout=60, interval=0.5)
        wait_for("no certbot run left", lambda: no_certbot_left(s), timeout=15)
        assert leftovers(s) == []
        assert nginx_test(s)[0] == 0

    def test_sigkill_during_config_writes_and_with_debris_left_behind(self, s: Stack) -> None:
        """A burst of sites, killed right after a reload while others are still being issued
        and written; then debris as a kill in the middle of a write leaves it."""
        sidecar = s.container("sidecar")
        burst = [f"burst{i}.demo.test" for i in range(6)]
        since = s.cursor()
        for i, d in enumerate(burst):
            s.run_app(f"burst{i}", {"acme.domains": d, **APP}, f"burst {i}")
        s.wait_event(Kind.RELOAD, since=since, timeout=60)
        sidecar.kill(signal="SIGKILL")
        # What a kill between mkstemp and os.replace leaves, and a half-staged lineage
        # (written into the dead sidecar's volumes by a throw-away container).
        debris = ("/etc/nginx/conf.d/.sidecar-tmp-killed", "/var/lib/nginx-acme-sidecar/.sidecar-tmp-killed",
                  "/etc/letsencrypt/.sidecar-tmp-killed", "/etc/letsencrypt/.staging/ghost.demo.test/archive/x",
                  "/var/www/acme/.well-known/acme-challenge/sidecar-probe-killed")
        script = " && ".join(f"mkdir -p {p.rsplit('/', 1)[0]} && echo half > {p}" for p in debris)
        s.client.containers.run(IMAGES["SIDECAR_IMAGE"], ["-c", script], entrypoint="sh",
                                volumes_from=[sidecar.id], remove=True, network_mode="none")
        sidecar.start()
        for d in (*burst, *DEMO_SITES):
            wait_for(d, lambda d=d: serving(s, d), timeout=90, interval=0.5)
        wait_for("no certbot run left", lambda: no_certbot_left(s), timeout=15)
        assert leftovers(s) == []
        code, out = nginx_test(s)
        assert code == 0, out
        code, listing = s.exec("nginx", "ls", "-a", "/etc/nginx/conf.d")
        assert code == 0 and ".sidecar-tmp" not in listing

    def test_sigterm_during_certbot_exits_promptly_and_leaves_no_certbot(self, s: Stack) -> None:
        s.run_app("term1", {"acme.domains": "term1.demo.test", **APP}, "after sigterm")
        wait_for("certbot running", lambda: certbot_running(s), timeout=60, interval=0.02)
        started = time.monotonic()
        s.compose("stop", "-t", "30", "sidecar")
        took = time.monotonic() - started
        s.record("sigterm_stop_seconds", round(took, 2))
        sidecar = s.container("sidecar")
        # Exit code 0 is the graceful way out and nothing else: SIGTERM not handled would be 143,
        # an error 1 or 2 (so no need to read "received SIGTERM" and "stopped" in its log).
        assert sidecar.attrs["State"]["ExitCode"] == 0, sidecar.attrs["State"]
        assert certbot_containers(s) == []
        assert took < 10, took
        # Started again, the interrupted work is finished.
        s.compose("start", "sidecar")
        wait_for("term1.demo.test", lambda: serving(s, "term1.demo.test"), timeout=60, interval=0.5)
        assert leftovers(s) == []


# -- the Docker API through a filtering socket proxy ---------------------------------------
def readme_endpoints() -> list[tuple[str, str]]:
    """(method, path) rows of the README's Docker API table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(GET|POST|DELETE|HEAD|PUT)` +\| `(/[^`]*)` +\|", text, re.M)
    assert rows, "README.md lists no Docker API endpoints"
    return rows


def allow_list(rows: list[tuple[str, str]]) -> str:
    def rx(path: str) -> str:
        out = re.escape(path).replace(r"\{id\}", "[^/]+").replace(r"\{name\}", ".+")
        return out

    return "\n".join(f"{m} {rx(p)}" for m, p in rows)


def proxy_override(rows: list[tuple[str, str]]) -> str:
    allow = "\n".join("        " + line for line in allow_list(rows).splitlines())
    demo = yaml.safe_load((DEMO / "compose.yml").read_text(encoding="utf-8"))
    volumes = "\n".join(f"      - {json.dumps(v)}" for v in demo["services"]["sidecar"]["volumes"]
                         if "docker.sock" not in v)
    return f"""
services:
  dockerproxy:
    image: {PROXY_IMAGE}
    environment:
      ALLOW: |
{allow}
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
    healthcheck:
      test: ["CMD", "python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 2375), 1).close()"]
      interval: 1s
      timeout: 2s
      retries: 30
    networks:
      - demo
  sidecar:
    depends_on:
      dockerproxy:
        condition: service_healthy
    environment:
      DOCKER_HOST: tcp://dockerproxy:2375
    # No Docker socket in the sidecar at all: only the proxy's filtered API.
    volumes: !override
{volumes}
"""


def test_through_a_filtering_socket_proxy_and_the_event_stream_dropping(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The sidecar has no Docker socket, only DOCKER_HOST=tcp://dockerproxy:2375, a proxy that
    allows exactly the endpoints README.md lists. Restarting the proxy cuts the event stream:
    the sidecar reconnects with back-off and resyncs (a site started meanwhile is served)."""
    rows = readme_endpoints()
    s = start_stack(Path(tmp_path_factory.mktemp("faults")), override=proxy_override(rows))
    try:
        code, out = s.exec("sidecar", "sh", "-c", "test -e /var/run/docker.sock && echo present || echo absent")
        assert out.strip() == "absent", out
        proxy = s.container("dockerproxy")
        proxy.stop(timeout=1)
        since = time.time()
        s.run_app("proxied", {"acme.domains": "proxied.demo.test", **APP}, "through the proxy")
        # No event says the stream was lost (only passes that fail emit docker_unavailable): the log line.
        log_line(s, r"WARNING +Docker event stream lost .*; reconnecting", since, timeout=30)
        time.sleep(2)  # (the outage goes on a little: reconnect attempts fail and back off)
        proxy.start()
        wait_for("proxied.demo.test", lambda: serving(s, "proxied.demo.test"), timeout=60, interval=0.5)
        for h in DEMO_SITES:
            assert serving(s, h)
        assert s.container("sidecar").status == "running"
        proxy_log = proxy.logs().decode("utf-8", "replace")
        denied = sorted({ln for ln in proxy_log.splitlines() if ln.startswith("DENY")})
        used = sorted({ln.split(" ", 1)[1] for ln in proxy_log.splitlines() if ln.startswith("ALLOW")})
        s.record("socket_proxy", {"denied": denied, "allowed_rows": len(rows),
                                  "used": sorted({re.sub(r"/[0-9a-f]{64}", "/{id}", u) for u in used})})
        assert denied == []
        # And the proxy does filter: anything else (here: listing volumes) is refused.
        code, out = s.exec("sidecar", "python3", "-c", "import http.client as h; c = h.HTTPConnection("
                           "'dockerproxy', 2375, timeout=5); c.request('GET', '/v1.41/volumes'); "
                           "print(c.getresponse().status); c.close()")
        assert (code, out.strip()) == (0, "403"), out
        assert "DENY GET /volumes" in proxy.logs().decode("utf-8", "replace")
    except BaseException:
        dump(s)
        raise
    finally:
        s.down()
