"""The issuer's side of Docker Swarm (``SIDECAR_ROLE=issuer``): one versioned bundle to every node.

    after each pass, and every few seconds:  collect CERTS_DIR + sidecar conf ─> digest changed? new version
    for each running agent task (Swarm API: GET /tasks, GET /nodes): its last report differs? PUT the bundle
    each report (sealed) ─> per-node state: version, applied | rejected | failed | unreachable

A node that rejects or fails a bundle is retried later with the same bundle; the other nodes are never
held back. Per-node state feeds ``/status`` (``nodes``), the CLI and the metrics (``node_bundle`` events).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from sidecar.adapters.docker_api import Docker
from sidecar.core import bundle as bundle_mod
from sidecar.core.bundle import Bundle, Refused
from sidecar.core.errors import DockerUnavailable
from sidecar.core.events import Kind
from sidecar.core.names import site_filename
from sidecar.core.settings import Settings
from sidecar.engine.reporter import Reporter
from sidecar.state import bundlefiles

log = logging.getLogger("sidecar")
INTERVAL = 2.0
RETRY_SECONDS = 20.0
PUSH_TIMEOUT = 60.0


@dataclass
class NodeState:
    node: str
    hostname: str
    version: int = 0
    digest: str = ""
    state: str = "pending"   # pending | applied | rejected | failed | unreachable | no agent
    detail: str = ""
    verified: int = 0
    offered: int = 0
    tried_at: float = 0.0

    def row(self) -> dict[str, Any]:
        return {"node": self.node, "hostname": self.hostname, "version": self.version, "state": self.state,
                "detail": self.detail, "verified": self.verified, "offered": self.offered}


class Distributor:
    def __init__(self, settings: Settings, docker: Docker, key: bytes, reporter: Reporter,
                 sites: Callable[[], tuple[tuple[str, str], ...]],
                 send: Callable[[str, bytes], tuple[int, bytes]] | None = None) -> None:
        self.settings, self.docker, self.key, self.reporter, self.sites = settings, docker, key, reporter, sites
        self.send = send or _put
        self.node = docker.swarm_node_id()
        self.current: Bundle | None = None
        self.floor = 0  # the highest version an agent said it applied (bundles are numbered after it)
        self.nodes: dict[str, NodeState] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.networks: frozenset[str] = frozenset()  # the issuer's own networks (the agents' address on one)

    def start(self) -> None:
        threading.Thread(target=self._run, name="distributor", daemon=True).start()

    def poke(self) -> None:
        self.wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            return [n.row() for n in sorted(self.nodes.values(), key=lambda n: n.hostname)]

    @property
    def version(self) -> int:
        return self.current.version if self.current else 0

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(INTERVAL)
            self.wake.clear()
            try:
                self.step()
            except DockerUnavailable as exc:
                log.warning("distributing the bundle: %s", exc)
            except Exception:  # noqa: BLE001 - the distributor must outlive any one failure
                log.exception("distributing the bundle failed")

    def build(self) -> Bundle:
        s = self.settings
        files = bundlefiles.collect(s.certs_dir, s.conf_dir, s.state_dir)
        digest = bundle_mod.files_digest(files)
        confs = {f.path for f in files if f.area == "conf"}
        sites = tuple(s for s in self.sites() if site_filename(s[0]) in confs)  # (what this bundle serves)
        if self.current is None or self.current.digest != digest or self.current.sites != sites:
            version = max(int(time.time() * 1000), self.version + 1, self.floor + 1)
            self.current = Bundle(version, digest, self.node, files, sites)
            log.info("bundle %d: %d files, %d site%s", version, len(files), len(sites), "" if len(sites) == 1 else "s")
        return self.current

    def step(self) -> None:
        b = self.build()
        hosts = {n.id: n.hostname for n in self.docker.swarm_nodes()}
        agents = [t for t in self.docker.swarm_tasks(self.settings.swarm_agent_service) if t.running]
        seen = set()
        blob: bytes | None = None
        for task in agents:
            seen.add(task.node_id)
            with self.lock:
                st = self.nodes.setdefault(task.node_id, NodeState(task.node_id, hosts.get(task.node_id, "")))
            st.hostname = hosts.get(task.node_id, st.hostname)
            done = st.version == b.version and st.state == "applied"  # (same files, other sites to check: sent too)
            retry = time.monotonic() - st.tried_at > RETRY_SECONDS
            if done or (st.offered == b.version and not retry):
                continue
            addr = next((ip for net, ip in sorted(task.networks.items()) if net in self.networks), "") or \
                next(iter(task.networks.values()), "")
            if not addr:
                continue
            blob = blob or bundle_mod.seal(self.key, bundle_mod.BUNDLE, bundle_mod.to_doc(b))
            self._push(st, addr, b, blob)
        with self.lock:
            for node_id, st in self.nodes.items():
                if node_id not in seen and st.state != "no agent":
                    self._set(st, "no agent", "no running agent task on this node", st.version, st.digest, 0)

    def _push(self, st: NodeState, addr: str, b: Bundle, blob: bytes) -> None:
        st.tried_at, st.offered = time.monotonic(), b.version
        try:
            code, body = self.send(f"http://{addr}:{self.settings.agent_port}/bundle", blob)
        except OSError as exc:
            self._set(st, "unreachable", f"agent at {addr}: {exc}", st.version, st.digest, 0)
            return
        if code == 409:  # the agent has a newer bundle (from before this issuer moved, with a clock ahead of ours)
            applied = body.decode(errors="replace").rsplit(":", 1)[-1].strip()
            if applied.isdigit() and int(applied) >= b.version:
                self.floor, self.current, st.tried_at = max(self.floor, int(applied)), None, 0.0
                self.wake.set()
                return
        if code != 200:
            self._set(st, "failed", f"agent answered {code}: {body[:200].decode(errors='replace').strip()}",
                      st.version, st.digest, 0)
            return
        try:
            r = bundle_mod.report_from(bundle_mod.unseal(self.key, bundle_mod.REPORT, body))
        except (Refused, ValueError, KeyError) as exc:
            self._set(st, "failed", f"report refused: {exc}", st.version, st.digest, 0)
            return
        self._set(st, r.state, r.detail, r.version, r.digest, r.verified)

    def _set(self, st: NodeState, state: str, detail: str, version: int, digest: str, verified: int) -> None:
        changed = (st.state, st.version, st.detail) != (state, version, detail)
        st.state, st.detail, st.version, st.digest, st.verified = state, detail, version, digest, verified
        if changed:
            line = f"node {st.hostname or st.node[:12]}: bundle {version} {state}" + (f" ({detail})" if detail else "")
            (log.info if state == "applied" else log.warning)("%s", line)
            self.reporter.emit(Kind.NODE_BUNDLE, "", line, node=st.node, hostname=st.hostname, version=version,
                               state=state, detail=detail, offered=st.offered)


def _put(url: str, blob: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=blob, method="PUT", headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=PUSH_TIMEOUT) as resp:  # noqa: S310 - the overlay address of an agent
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
