"""The per-node agent (``SIDECAR_ROLE=agent``, a global Swarm service): applies the issuer's bundles
to the nginx task on its own node, and answers each with a report.

    issuer ──PUT /bundle (sealed)──> agent: open ─> write certs ─> write conf ─> nginx -t ─┬─ reload ─> verify
                                                                   (refused: 403)         └─ rejected: previous conf back
           <──────────────── report (sealed): node, version, applied | rejected | failed ──┘

It needs only its node's Docker socket (find nginx, ``nginx -t``, reload) and the certificate and
conf volumes. A bundle that is not sealed with the shared key is refused and changes nothing; an
older bundle than the one applied is refused too (no replay). On the issuer's own node the issuer
writes the volumes itself: the agent only checks what nginx serves there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from cryptography import x509

from sidecar.adapters import probe
from sidecar.adapters.docker_api import Docker
from sidecar.adapters.nginx import DockerNginx
from sidecar.core import bundle as bundle_mod
from sidecar.core.bundle import REPORT, Bundle, Refused, Report
from sidecar.core.errors import SidecarError
from sidecar.core.settings import Settings
from sidecar.sources.containers import find_nginx
from sidecar.state import bundlefiles

log = logging.getLogger("sidecar")
VERIFY_SECONDS = 15.0


@dataclass
class Applied:
    version: int = 0
    digest: str = ""
    state: str = "none"
    detail: str = ""
    verified: int = 0
    refused: int = 0


class Agent:
    def __init__(self, settings: Settings, docker: Docker, key: bytes,
                 serial_of: Callable[[str, str], int | None] | None = None) -> None:
        self.settings, self.docker, self.key = settings, docker, key
        self.node = docker.swarm_node_id()
        self.hostname = self._hostname()
        self.current = Applied()
        self.lock = threading.Lock()
        self.serial_of = serial_of or (lambda addr, sni: probe.served_serial(addr, sni))

    def _hostname(self) -> str:
        try:
            return Path("/etc/hostname").read_text().strip()
        except OSError:
            return ""

    # -- one bundle ------------------------------------------------------------------
    def receive(self, blob: bytes, peer: str) -> tuple[int, bytes]:
        """HTTP status and the sealed report (403 and a plain line for what is refused)."""
        try:
            b = bundle_mod.from_doc(bundle_mod.unseal(self.key, bundle_mod.BUNDLE, blob))
        except (Refused, ValueError, KeyError, TypeError) as exc:
            with self.lock:
                self.current.refused += 1
            log.error("refused a bundle from %s: %s", peer, exc)
            return 403, f"refused: {exc}\n".encode()
        with self.lock:
            if b.version < self.current.version and b.digest != self.current.digest:
                self.current.refused += 1
                log.error("refused bundle %d from %s: older than the one applied (%d)", b.version, peer,
                          self.current.version)
                # 409 with the version applied: an issuer whose clock is behind (it moved) numbers its next bundle after it
                return 409, f"refused: older than the bundle applied: {self.current.version}\n".encode()
            report = self.apply(b)
        return 200, bundle_mod.seal(self.key, REPORT, bundle_mod.report_doc(report))

    def apply(self, b: Bundle) -> Report:
        s = self.settings
        nginx_c, _ = find_nginx(self.docker.list_containers(), s, None)
        if nginx_c is None:
            return self._done(b, "failed", "no nginx container on this node (label acme.nginx=true)")
        nginx = DockerNginx(self.docker, nginx_c.id)
        own = b.issuer_node == self.node
        changed = False
        if not own and b.digest != self.current.digest:
            roots = {"certs": s.certs_dir, "conf": s.conf_dir}
            previous = bundlefiles.conf_files(s.conf_dir)
            certs = tuple(f for f in b.files if f.area == "certs" or "/" in f.path)
            top = {f.path: f.data for f in b.files if f.area == "conf" and "/" not in f.path}
            try:
                written = bundlefiles.write(certs, roots)
                changed = bool(written) or top != previous
                bundlefiles.replace_conf(s.conf_dir, top)
            except OSError as exc:
                return self._done(b, "failed", f"writing the bundle failed: {exc}")
            if changed:
                ok, out = nginx.test()
                if not ok:
                    bundlefiles.replace_conf(s.conf_dir, previous)
                    line = next((x for x in out.splitlines() if "emerg" in x or "error" in x), out.strip()[-300:])
                    log.error("bundle %d rejected by nginx -t on this node, previous configuration kept: %s",
                              b.version, line)
                    return self._done(b, "rejected", line, keep=True)
                ok, out = nginx.reload()
                if not ok:
                    return self._done(b, "failed", f"nginx -s reload failed: {out.strip()[-300:]}", keep=True)
        addr = next((ip for ip in nginx_c.networks.values() if ip), "")
        verified, missing = self._verify(b, addr)
        if missing:
            return self._done(b, "failed", f"nginx does not serve the bundle's certificate for {', '.join(missing)}",
                              verified=verified)
        log.info("bundle %d applied%s: %d site%s verified", b.version,
                 " (the issuer's node: written by the issuer)" if own else "" if changed else " (no change)",
                 verified, "" if verified == 1 else "s")
        return self._done(b, "applied", "", verified=verified)

    def _verify(self, b: Bundle, addr: str) -> tuple[int, list[str]]:
        """Each site's certificate served by this node's nginx (reloads finish asynchronously: retried)."""
        wanted = {}
        for name, domain in b.sites:
            try:
                pem = (self.settings.certs_dir / "live" / name / "cert.pem").read_bytes()
                wanted[domain] = x509.load_pem_x509_certificate(pem).serial_number
            except (OSError, ValueError):
                continue
        deadline = time.monotonic() + VERIFY_SECONDS
        while True:
            missing = [d for d, serial in wanted.items() if not addr or self.serial_of(addr, d) != serial]
            if not missing or time.monotonic() > deadline:
                return len(wanted) - len(missing), missing
            time.sleep(0.3)

    def _done(self, b: Bundle, state: str, detail: str, verified: int = 0, keep: bool = False) -> Report:
        """Record the outcome; ``keep``: the bundle did not take, the version applied stays the previous one."""
        if not keep:
            self.current.version, self.current.digest = b.version, b.digest
        self.current.state, self.current.detail, self.current.verified = state, detail, verified
        return Report(self.node, self.hostname, b.version if not keep else self.current.version,
                      b.digest if not keep else self.current.digest, state, detail, verified,
                      {"offered": b.version, "refused": self.current.refused})

    def status(self) -> dict[str, Any]:
        with self.lock:
            c = self.current
            return {"node": self.node, "hostname": self.hostname, "version": c.version, "digest": c.digest,
                    "state": c.state, "detail": c.detail, "verified": c.verified, "refused": c.refused}


def _handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "nginx-acme-sidecar-agent"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("agent: %s %s", self.client_address[0], format % args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") in ("/healthz", "/status"):
                self._send(200, (json.dumps(agent.status()) + "\n").encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_PUT(self) -> None:  # noqa: N802
            if self.path != "/bundle":
                self._send(404, b"not found\n", "text/plain")
                return
            size = int(self.headers.get("Content-Length") or 0)
            if not 0 < size <= bundle_mod.MAX_SIZE:
                self._send(413, b"bad size\n", "text/plain")
                return
            blob = self.rfile.read(size)
            try:
                code, body = agent.receive(blob, str(self.client_address[0]))
            except SidecarError as exc:
                log.error("applying a bundle failed: %s", exc)
                code, body = 500, f"{exc}\n".encode()
            self._send(code, body, "application/octet-stream" if code == 200 else "text/plain")

    return Handler


def serve(settings: Settings, docker: Docker, key: bytes, stopped: threading.Event) -> None:
    agent = Agent(settings, docker, key)
    server = ThreadingHTTPServer(("0.0.0.0", settings.agent_port), _handler(agent))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="agent-http", daemon=True).start()
    log.info("agent on node %s (%s) listening on port %d for bundles", agent.hostname, agent.node[:12],
             settings.agent_port)
    stopped.wait()
    server.shutdown()
