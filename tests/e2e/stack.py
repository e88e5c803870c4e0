"""Helpers for the end-to-end tests: a real Compose project of the local demo
(Pebble, nginx, the sidecar, two apps) on a private network and 127.0.0.1 ports.

Nothing here is faked: certificates come from Pebble over real HTTP-01 against
nginx, fetched by the real certbot image the sidecar starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import docker
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from ..support.images import images
from ..support.net import Response, free_port, http_get, stays, tls_get, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "local-demo"
# Override any of these with E2E_<NAME>, e.g. E2E_SIDECAR_IMAGE=local/nginx-acme-sidecar:mine
IMAGES = images("E2E_")
ARTIFACTS = ROOT / ".artifacts"

__all__ = ["ARTIFACTS", "DEMO", "IMAGES", "ROOT", "Event", "Response", "Stack", "dns_names", "free_port",
           "issuer_cn", "new_stack", "running", "stays", "wait_for"]


@dataclass(frozen=True)
class Event:
    """One event of the sidecar's engine, as ``GET /events`` gives it (sidecar.core.events.Event)."""

    seq: int                  # its place in this test run's history (``Stack.cursor``), from 1
    kind: str                 # sidecar.core.events.Kind value: site_live, cert_issued, reload, ...
    at: datetime
    site: str
    message: str
    details: dict[str, Any]
    run: str                  # which sidecar process emitted it (when that process started)


@dataclass
class Stack:
    project: str
    network: str
    http_port: int
    https_port: int
    mgmt_port: int
    sites_dir: Path
    env: dict[str, str]
    client: docker.DockerClient
    root_pem: str = ""
    started: list[str] = field(default_factory=list)
    # More compose files layered over the demo's (``-f`` after it), e.g. tests/e2e/compose.acmeproxy.yml
    extra_files: list[Path] = field(default_factory=list)
    # The sidecar's events read so far, across its restarts (see ``events``)
    history: list[Event] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    _read: int = 0  # the sidecar's own number of the last event read from its current process

    # -- compose ---------------------------------------------------------------
    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [a for f in [DEMO / "compose.yml", *self.extra_files] for a in ("-f", str(f))]
        cmd = ["docker", "compose", "-p", self.project, *files, *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def container(self, service: str) -> Any:
        found = self.client.containers.list(
            all=True,
            filters={"label": [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]},
        )
        assert found, f"no container for service {service}"
        return found[0]

    def logs(self, service: str = "sidecar", since: float | None = None) -> str:
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
        if since is not None:
            kwargs["since"] = int(since)
        return self.container(service).logs(**kwargs).decode("utf-8", "replace")

    def exec(self, service: str, *cmd: str) -> tuple[int, str]:
        code, out = self.container(service).exec_run(list(cmd))
        return code, out.decode("utf-8", "replace")

    # -- apps ------------------------------------------------------------------
    def run_app(self, name: str, labels: dict[str, str], text: str) -> Any:
        c = self.client.containers.run(
            IMAGES["APP_IMAGE"],
            ["-listen=:5678", f"-text={text}"],
            name=f"{self.project}-{name}",
            labels={**labels, "e2e.project": self.project},
            network=self.network,
            detach=True,
        )
        self.started.append(c.id)
        return c

    # -- HTTPS -----------------------------------------------------------------
    def fetch_root(self) -> str:
        code, ca = self.exec("pebble", "cat", "/pebble-ca/ca.pem")
        assert code == 0, ca
        r = tls_get(self.mgmt_port, "localhost", "/roots/0", ca, 5.0)
        assert r.status == 200, r.body
        self.root_pem = r.body
        return r.body

    def https(self, host: str, path: str = "/", timeout: float = 5.0) -> Response:
        """GET https://host/path via 127.0.0.1 with SNI=host, verified against Pebble's root."""
        return tls_get(self.https_port, host, path, self.root_pem, timeout)

    def http(self, host: str, path: str = "/") -> tuple[int, dict[str, str], str]:
        return http_get(self.http_port, host, path)

    def cert_on_disk(self, name: str) -> x509.Certificate:
        code, pem = self.exec("sidecar", "cat", f"/etc/letsencrypt/live/{name}/cert.pem")
        assert code == 0, pem
        return x509.load_pem_x509_certificate(pem.encode())

    def certbot_runs(self, site: str) -> list[tuple[int, str]]:
        """(exit code, output) of the site's kept certbot runs, oldest first: STATE_DIR/certbot-logs/
        <site>/<time>-<exit code>.log, the files ``status`` points at."""
        folder = f"/var/lib/nginx-acme-sidecar/certbot-logs/{site}"
        code, out = self.exec("sidecar", "ls", folder)
        assert code == 0, out
        runs = []
        for name in sorted(out.split()):
            code, text = self.exec("sidecar", "cat", f"{folder}/{name}")
            assert code == 0, text
            runs.append((int(name.removesuffix(".log").rsplit("-", 1)[1]), text))
        return runs

    def write_sites(self, text: str) -> None:
        path = self.sites_dir / "sites.yml"
        tmp = self.sites_dir / ".sites.yml.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)

    # -- the sidecar's status API (its port, published on 127.0.0.1) ------------------------------
    def api(self, path: str, timeout: float = 5.0) -> dict[str, Any]:
        """GET ``path`` from the sidecar's status server; its JSON answer (200 only)."""
        status, _, body = http_get(int(self.env["STATUS_PORT_HOST"]), "127.0.0.1", path, timeout)
        assert status == 200, (path, status, body[:500])
        return dict(json.loads(body))

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``GET /metrics``: every sample, by (name, sorted labels)."""
        status, _, text = http_get(int(self.env["STATUS_PORT_HOST"]), "127.0.0.1", "/metrics")
        assert status == 200, text[:500]
        return {(x.name, tuple(sorted(x.labels.items()))): x.value
                for f in text_string_to_metric_families(text) for x in f.samples}

    def status(self) -> dict[str, Any]:
        """``GET /status``: sites (one row each, by name in ``["rows"]`` too), problems, health."""
        doc = self.api("/status")
        doc["rows"] = {r["site"]: r for r in doc["sites"]}
        return doc

    def wait_pass(self, after: datetime, timeout: float = 30.0) -> dict[str, Any]:
        """The status once a reconcile pass has finished after ``after`` (a UTC time): whatever
        was changed before ``after`` has been acted on (or deliberately not)."""
        return dict(wait_for(f"a pass finished after {after:%H:%M:%S.%f}",
                             lambda: (d := self.status())["updated"] and datetime.fromisoformat(d["updated"]) > after
                             and d, timeout=timeout, interval=0.2))

    def _read_events(self) -> None:
        doc = self.api(f"/events?since={self._read}")
        if doc["started"] != (self.runs[-1] if self.runs else None):
            # Another sidecar process (a restart): its numbers start at 1 again.
            if self._read:
                self._read = 0
                doc = self.api("/events?since=0")
            self.runs.append(doc["started"])
        assert not doc["missed"], f"{doc['missed']} events were dropped by the sidecar before they were read"
        for e in doc["events"]:
            self.history.append(Event(len(self.history) + 1, e["kind"], datetime.fromisoformat(e["at"]), e["site"],
                                      e["message"], e["details"], doc["started"]))
        self._read = doc["next"]

    def events(self, since: int = 0, kind: str | None = None, site: str | None = None) -> list[Event]:
        """The sidecar's events after ``since`` (a ``cursor()``), oldest first, optionally only those of
        one ``kind`` and ``site``. Events of a sidecar process are kept here across its restarts when
        they were read before it stopped (every ``events``/``cursor``/``wait_event`` call reads)."""
        self._read_events()
        return [e for e in self.history[since:] if kind in (None, e.kind) and site in (None, e.site)]

    def cursor(self) -> int:
        """Where "from now on" starts, for ``events(since=...)``."""
        self._read_events()
        return len(self.history)

    def wait_event(self, kind: str, site: str | None = None, since: int = 0, timeout: float = 60.0,
                   where: Callable[[Event], object] = lambda e: True) -> Event:
        """The first event of ``kind`` (for ``site``; matching ``where``) after ``since``, waiting for it."""
        found: Event = wait_for(f"a {kind} event{f' for {site}' if site else ''} after #{since}",
                                lambda: next((e for e in self.events(since, kind, site) if where(e)), None),
                                timeout=timeout, interval=0.2)
        return found

    def no_event(self, kind: str, site: str | None = None, since: int = 0, deadline: float = 2.0) -> None:
        """Nothing of ``kind`` (for ``site``) after ``since``, until ``deadline`` seconds from now;
        fails as soon as one comes."""
        stays(f"unexpected {kind} event(s){f' for {site}' if site else ''} after #{since}",
              lambda: [(e.kind, e.site, e.message) for e in self.events(since, kind, site)], deadline, interval=0.2)

    def record(self, key: str, value: Any) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / "e2e-measurements.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[key] = value
        path.write_text(json.dumps(data, indent=1) + "\n")

    # -- lifecycle -------------------------------------------------------------
    def save_logs(self) -> None:
        """Keep every service's log in .artifacts/logs/ for post-mortems."""
        out = ARTIFACTS / "logs"
        out.mkdir(parents=True, exist_ok=True)
        for service in ("sidecar", "nginx", "pebble"):
            try:
                (out / f"{self.project}-{service}.log").write_text(self.logs(service))
            except Exception:  # noqa: BLE001 - best effort
                pass

    def down(self) -> None:
        self.save_logs()
        for cid in self.started:
            try:
                self.client.containers.get(cid).remove(force=True)
            except docker.errors.NotFound:
                pass
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
        shutil.rmtree(self.sites_dir, ignore_errors=True)


def dns_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def issuer_cn(cert: x509.Certificate) -> str:
    return str(cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def new_stack(tmp_root: Path) -> Stack:
    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"Docker engine not reachable ({exc}): run bash .ci/setup-docker.sh") from exc
    missing = [img for img in IMAGES.values() if not client.images.list(name=img)]
    if missing:
        raise RuntimeError(f"images missing: {', '.join(missing)}: run bash tests/build-images.sh")
    project = "e2e" + uuid.uuid4().hex[:8]
    sites_dir = tmp_root / project
    sites_dir.mkdir(parents=True)
    shutil.copy(DEMO / "config" / "sites.yml", sites_dir / "sites.yml")
    http_port, https_port, mgmt_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **IMAGES,
        "HTTP_PORT": str(http_port),
        "HTTPS_PORT": str(https_port),
        "PEBBLE_MGMT_PORT": str(mgmt_port),
        "STATUS_PORT_HOST": str(free_port()),
        "DEMO_NETWORK": f"{project}-net",
        "SITES_DIR": str(sites_dir),
        "DEBOUNCE_SECONDS": "0.2",
        # other stacks may run on the same engine (parallel test runs, the benchmark)
        "SITES_SCOPE": "network",
        "LOG_LEVEL": os.environ.get("E2E_LOG_LEVEL", "info"),  # (debug: the timings of every step)
    }
    return Stack(project, f"{project}-net", http_port, https_port, mgmt_port, sites_dir, env, client)


@contextlib.contextmanager
def running(s: Stack, hosts: Sequence[str], *up_args: str) -> Iterator[Stack]:
    """Bring the stack up, wait until every host in ``hosts`` answers over HTTPS, and
    always tear it down; on a failure while starting, print the sidecar's log."""
    try:
        s.compose("up", "-d", "--no-build", *up_args)
        s.fetch_root()
        for host in hosts:
            wait_for(f"https://{host}", lambda h=host: s.https(h).status == 200, timeout=90)  # type: ignore[misc]
        yield s
    except BaseException:
        print(f"---- sidecar logs ({s.project}) ----\n" + s.logs()[-8000:])
        raise
    finally:
        s.down()
