#!/usr/bin/env python3
"""A fault-injecting ACME proxy for the end-to-end tests (Python standard library + cryptography).

    certbot / sidecar --TLS--> acmeproxy:14000 --TLS--> pebble:14000
                                    ^
            tests: plain HTTP control API on :8080 (rules, request log)

Pebble enforces no rate limit and never fails on purpose; this proxy answers chosen
requests the way a busy or strict CA would:

- ``ratelimit``  429 ``urn:ietf:params:acme:error:rateLimited`` with a ``Retry-After`` header
                 and Let's Encrypt's detail text ("... retry after YYYY-MM-DD HH:MM:SS UTC: see ...").
                 Like the real CA, the rule keeps refusing until that moment, then lets requests through.
- ``error5xx``   503 (or ``status``) with a ``serverInternal`` problem.
- ``drop``       closes the connection without answering.
- ``hang``       keeps the connection open and never answers (until the client gives up,
                 or ``hang_seconds``).

Everything else is forwarded to the upstream (``UPSTREAM``, trusted with ``UPSTREAM_CA``).
The ``Host`` header is kept (``acmeproxy:14000``): Pebble builds its URLs from it and checks
every JWS ``url`` header against it, so URLs in bodies and ``Location``/``Link`` headers
already point at the proxy. Any leftover ``pebble:14000`` is rewritten anyway.

TLS: at start the proxy makes (or reuses) a throw-away CA and a listener certificate for
``PROXY_NAMES`` and publishes the CA as ``$CA_DIR/ca.pem`` (clients: trust that file).

Control API (port 8080, JSON):
  POST   /rules   a rule object or a list of them; returns them with ids
                  {"resource": "newOrder" | [..] | "*", "identifier": "x.test" (optional),
                   "action": "ratelimit"|"error5xx"|"drop"|"hang", "count": N (optional),
                   "retry_after": seconds (ratelimit, default 60) or "retry_at": ISO time,
                   "limit": "exact_set"|"registered_domain"|"new_orders"|"failed_authorizations",
                   "status": 503, "hang_seconds": 120}
  GET    /rules   the rules with how often each fired
  DELETE /rules   remove all rules
  GET    /log     every request: {"t": epoch, "time": ISO, "method", "path", "resource",
                  "identifiers", "action", "status", "rule"}  (``?since=EPOCH`` filters);
                  kept in $TLS_DIR/requests.jsonl across restarts, each start adds a
                  {"resource": "proxy-start"} entry
  DELETE /log     clear the log
  GET    /healthz
Resources are the directory's keys (directory, newNonce, newAccount, newOrder, revokeCert,
keyChange, renewalInfo) and authz, challenge, finalize, order, certificate, account.
Identifiers come from the decoded JWS payload (newOrder) or from what earlier responses
said a URL belongs to (order, authz, challenge, finalize and certificate URLs).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import http.server
import json
import os
import select
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UPSTREAM = os.environ.get("UPSTREAM", "https://pebble:14000")
UPSTREAM_CA = os.environ.get("UPSTREAM_CA", "/pebble-ca/ca.pem")
NAMES = [n.strip() for n in os.environ.get("PROXY_NAMES", "acmeproxy").split(",") if n.strip()]
CA_DIR = Path(os.environ.get("CA_DIR", "/proxy-ca"))
TLS_DIR = Path(os.environ.get("TLS_DIR", "/var/lib/acmeproxy"))
LISTEN_PORT = int(os.environ.get("LISTEN_PORT", "14000"))
CONTROL_PORT = int(os.environ.get("CONTROL_PORT", "8080"))
UPSTREAM_TIMEOUT = float(os.environ.get("UPSTREAM_TIMEOUT", "30"))
# The request log, kept across restarts of the container (stop/start, restart).
LOG_FILE = TLS_DIR / "requests.jsonl"

_up = urlsplit(UPSTREAM)
UP_HOST, UP_PORT = _up.hostname or "pebble", _up.port or 443
UP_NETLOC = f"{UP_HOST}:{UP_PORT}"
PUBLIC_NETLOC = f"{NAMES[0]}:{LISTEN_PORT}"

# Pebble's paths for the resources that are not in the directory.
PREFIXES = {
    "/authZ/": "authz", "/chalZ/": "challenge", "/finalize-order/": "finalize", "/my-order/": "order",
    "/certZ/": "certificate", "/my-account/": "account", "/list-orderz/": "orders",
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade", "te"}

# Let's Encrypt's wording (https://letsencrypt.org/docs/rate-limits/); {at} is "YYYY-MM-DD HH:MM:SS UTC".
LIMIT_TEXT = {
    "exact_set": ("too many certificates (5) already issued for this exact set of identifiers in the last "
                  "168h0m0s, retry after {at}: see https://letsencrypt.org/docs/rate-limits/"
                  "#new-certificates-per-exact-set-of-identifiers"),
    "registered_domain": ("too many certificates (50) already issued for \"{domain}\" in the last 168h0m0s, "
                          "retry after {at}: see https://letsencrypt.org/docs/rate-limits/"
                          "#new-certificates-per-registered-domain"),
    "new_orders": ("too many new orders (300) created by this account in the last 3h0m0s, retry after {at}: "
                   "see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account"),
    "failed_authorizations": ("too many failed authorizations (5) for \"{domain}\" in the last 1h0m0s, "
                              "retry after {at}: see https://letsencrypt.org/docs/rate-limits/"
                              "#authorization-failures-per-identifier-per-account"),
}
ACTIONS = ("ratelimit", "error5xx", "drop", "hang")


def log(msg: str) -> None:
    print(f"[acmeproxy] {msg}", file=sys.stderr, flush=True)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# -- TLS: a throw-away CA and the listener certificate --------------------------------------
def _tls_ok(ca_pem: Path, cert_pem: Path, key_pem: Path) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
        serialization.load_pem_private_key(key_pem.read_bytes(), None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, Exception):  # noqa: BLE001
        return False
    return set(NAMES) <= set(san.get_values_for_type(x509.DNSName)) and \
        cert.not_valid_after_utc > utcnow() + dt.timedelta(days=1)


def make_tls() -> tuple[Path, Path]:
    """Reuse or create the CA and listener certificate; publish the CA as CA_DIR/ca.pem."""
    TLS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    CA_DIR.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = TLS_DIR / "ca.pem", TLS_DIR / "cert.pem", TLS_DIR / "key.pem"
    if _tls_ok(ca_file, cert_file, key_file):
        log("reusing the listener certificate")
    else:
        now = utcnow() - dt.timedelta(minutes=5)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acmeproxy test"),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"acmeproxy CA {os.urandom(4).hex()}")])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(ca_ski, critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0])]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
                .sign(ca_key, hashes.SHA256()))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        log(f"new listener certificate for {', '.join(NAMES)}")
    # Publish atomically: a client never reads half a file.
    tmp = CA_DIR / f".ca.pem.{os.getpid()}"
    tmp.write_bytes(ca_file.read_bytes())
    tmp.chmod(0o644)
    os.replace(tmp, CA_DIR / "ca.pem")
    log(f"CA published at {CA_DIR / 'ca.pem'}")
    return cert_file, key_file


# -- rules and the request log --------------------------------------------------------------
class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.next_id = 1
        # URL path -> identifiers it belongs to (learned from responses)
        self.owners: dict[str, list[str]] = {}
        # URL path -> directory key
        self.directory: dict[str, str] = {}

    def add_rules(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = utcnow()
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("a rule is a JSON object")
            action = item.get("action")
            if action not in ACTIONS:
                raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
            resource = item.get("resource", "*")
            resources = [resource] if isinstance(resource, str) else list(resource)
            rule: dict[str, Any] = {
                "resources": resources,
                "identifier": item.get("identifier"),
                "action": action,
                "count": int(item["count"]) if item.get("count") is not None else None,
                "fired": 0,
            }
            if action == "ratelimit":
                if item.get("retry_at"):
                    at = dt.datetime.fromisoformat(str(item["retry_at"]).replace("Z", "+00:00"))
                else:
                    at = now + dt.timedelta(seconds=float(item.get("retry_after", 60)))
                # The CA's text has whole seconds; round up so "retry after" is never early.
                at = at.astimezone(dt.timezone.utc)
                if at.microsecond:
                    at = at.replace(microsecond=0) + dt.timedelta(seconds=1)
                rule["retry_at"] = at.isoformat()
                rule["limit"] = item.get("limit", "exact_set")
                if rule["limit"] not in LIMIT_TEXT:
                    raise ValueError(f"limit must be one of {', '.join(LIMIT_TEXT)}")
            elif action == "error5xx":
                rule["status"] = int(item.get("status", 503))
            elif action == "hang":
                rule["hang_seconds"] = float(item.get("hang_seconds", 120))
            out.append(rule)
        with self.lock:
            for rule in out:
                rule["id"] = self.next_id
                self.next_id += 1
                self.rules.append(rule)
        return out

    def match(self, resource: str, identifiers: list[str]) -> dict[str, Any] | None:
        now = utcnow()
        with self.lock:
            for rule in self.rules:
                if "*" not in rule["resources"] and resource not in rule["resources"]:
                    continue
                if rule["identifier"] and rule["identifier"] not in identifiers:
                    continue
                if rule["count"] is not None and rule["fired"] >= rule["count"]:
                    continue
                if "retry_at" in rule and now >= dt.datetime.fromisoformat(rule["retry_at"]):
                    continue  # the limit has lifted
                rule["fired"] += 1
                return dict(rule)
        return None

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)

    def persist(self, entry: dict[str, Any]) -> None:
        """Append a finished entry to LOG_FILE, so the log survives restarts of the proxy."""
        line = json.dumps(entry) + "\n"
        with self.lock:
            try:
                with open(LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(line)
            except OSError as exc:
                log(f"cannot write {LOG_FILE}: {exc}")

    def load(self) -> None:
        try:
            lines = LOG_FILE.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        with self.lock:
            for line in lines:
                try:
                    self.log.append(json.loads(line))
                except ValueError:
                    pass
        log(f"{len(lines)} earlier requests loaded from {LOG_FILE}")


STATE = State()


def resource_of(path: str) -> str:
    bare = path.split("?", 1)[0]
    with STATE.lock:
        directory = dict(STATE.directory)
    if bare in directory:
        return directory[bare]
    for prefix, key in directory.items():
        if key == "renewalInfo" and bare.startswith(prefix.rstrip("/") + "/"):
            return key
    for prefix, name in PREFIXES.items():
        if bare.startswith(prefix):
            return name
    if bare in ("/dir", "/directory"):
        return "directory"
    return "other"


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload_of(body: bytes) -> Any:
    """The decoded JWS payload (None when the body is no flattened JWS or the payload is empty)."""
    try:
        jws = json.loads(body)
        raw = jws.get("payload", "")
        return json.loads(_b64decode(raw)) if raw else None
    except (ValueError, AttributeError, TypeError):
        return None


def _path(url: Any) -> str | None:
    return urlsplit(url).path if isinstance(url, str) and url else None


def learn(resource: str, path: str, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
    """Remember which identifiers the URLs in a response belong to."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return
    if not isinstance(doc, dict) or status >= 300:
        return
    with STATE.lock:
        if resource == "directory":
            for key, url in doc.items():
                p = _path(url)
                if p:
                    STATE.directory[p] = key
            return
        if resource in ("newOrder", "order"):
            idents = [str(i["value"]) for i in doc.get("identifiers") or [] if isinstance(i, dict) and i.get("value")]
            # An authorization belongs to one of the order's names: which one, its own response says.
            for url in doc.get("authorizations") or []:
                p = _path(url)
                if p:
                    STATE.owners.setdefault(p, idents)
            targets = [_path(doc.get("finalize")), _path(doc.get("certificate")), _path(headers.get("Location"))]
            if resource == "order":
                targets.append(path)
            for p in targets:
                if p:
                    STATE.owners[p] = idents
        elif resource == "authz":
            ident = (doc.get("identifier") or {}).get("value")
            if ident:
                STATE.owners[path] = [ident]
                for ch in doc.get("challenges") or []:
                    p = _path(ch.get("url")) if isinstance(ch, dict) else None
                    if p:
                        STATE.owners[p] = [ident]


def identifiers_of(resource: str, path: str, body: bytes) -> list[str]:
    payload = payload_of(body)
    if resource == "newOrder" and isinstance(payload, dict):
        return [str(i.get("value")) for i in payload.get("identifiers") or [] if isinstance(i, dict)]
    with STATE.lock:
        return list(STATE.owners.get(path.split("?", 1)[0], []))


def load_directory() -> None:
    """Learn the directory's paths before the first client asks (best effort)."""
    for _ in range(60):
        try:
            status, headers, body = upstream("GET", "/dir", b"", {"Host": PUBLIC_NETLOC})
            learn("directory", "/dir", status, headers, body)
            if STATE.directory:
                log(f"directory: {json.dumps(STATE.directory, sort_keys=True)}")
                return
        except (OSError, http.client.HTTPException) as exc:
            log(f"upstream not ready ({exc}); retrying")
        time.sleep(1)


_UP_CTX: ssl.SSLContext | None = None


def upstream(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, http.client.HTTPMessage, bytes]:
    global _UP_CTX
    if _UP_CTX is None:
        _UP_CTX = ssl.create_default_context(cafile=UPSTREAM_CA)
    conn = http.client.HTTPSConnection(UP_HOST, UP_PORT, timeout=UPSTREAM_TIMEOUT, context=_UP_CTX)
    try:
        conn.request(method, path, body=body if method != "GET" and method != "HEAD" else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def problem(status: int, kind: str, detail: str) -> bytes:
    return json.dumps({"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail, "status": status}).encode()


# -- the ACME side ---------------------------------------------------------------------------
class AcmeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "acmeproxy"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(120)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ssl.SSLError):
            pass  # clients that hang up mid-handshake or mid-request

    def do_GET(self) -> None:  # noqa: N802
        self._proxy()

    def do_HEAD(self) -> None:  # noqa: N802
        self._proxy()

    def do_POST(self) -> None:  # noqa: N802
        self._proxy()

    def _proxy(self) -> None:
        started = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        resource = resource_of(self.path)
        idents = identifiers_of(resource, self.path, body)
        rule = STATE.match(resource, idents)
        entry: dict[str, Any] = {
            "t": started, "time": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
            "method": self.command, "path": self.path, "resource": resource, "identifiers": idents,
            "action": rule["action"] if rule else "forward", "rule": rule["id"] if rule else None, "status": None,
        }
        STATE.record(entry)
        log(f"{self.command} {self.path} [{resource}{' ' + ','.join(idents) if idents else ''}] -> {entry['action']}")
        try:
            self._act(rule, body, resource, idents, entry)
        finally:
            STATE.persist(entry)

    def _act(self, rule: dict[str, Any] | None, body: bytes, resource: str, idents: list[str],
             entry: dict[str, Any]) -> None:
        if rule is None:
            self._forward(body, resource, entry)
        elif rule["action"] == "ratelimit":
            at = dt.datetime.fromisoformat(rule["retry_at"])
            seconds = max(1, int((at - utcnow()).total_seconds() + 0.999))
            detail = LIMIT_TEXT[rule["limit"]].format(at=f"{at:%Y-%m-%d %H:%M:%S} UTC",
                                                      domain=(idents or ["example.test"])[0])
            entry["status"] = 429
            self._answer(429, problem(429, "rateLimited", detail), {"Retry-After": str(seconds)})
        elif rule["action"] == "error5xx":
            status = rule["status"]
            entry["status"] = status
            self._answer(status, problem(status, "serverInternal", "the server is temporarily unavailable (injected)"),
                         {"Retry-After": "5"})
        elif rule["action"] == "drop":
            self._hang_up()
        elif rule["action"] == "hang":
            deadline = time.monotonic() + rule["hang_seconds"]
            sock = self.connection
            # Wait until the client gives up (EOF or error) or the time is over; never answer.
            while time.monotonic() < deadline:
                try:
                    ready, _, _ = select.select([sock], [], [], 1.0)
                    if ready and not sock.recv(1):
                        break
                except (OSError, ssl.SSLError, ValueError):
                    break
            entry["ended"] = time.time()
            self._hang_up()

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _answer(self, status: int, body: bytes, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes, resource: str, entry: dict[str, Any]) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = PUBLIC_NETLOC
        try:
            status, up_headers, data = upstream(self.command, self.path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            entry["status"] = 502
            entry["error"] = str(exc)
            self._answer(502, problem(502, "serverInternal", f"acmeproxy: upstream failed: {exc}"), {})
            return
        entry["status"] = status
        learn(resource, self.path, status, up_headers, data)
        data = data.replace(UP_NETLOC.encode(), PUBLIC_NETLOC.encode())
        self.send_response(status)
        for k, v in up_headers.items():
            if k.lower() in HOP_BY_HOP:
                continue
            self.send_header(k, v.replace(UP_NETLOC, PUBLIC_NETLOC))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class TLSServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], context: ssl.SSLContext) -> None:
        super().__init__(addr, AcmeHandler)
        self.context = context

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The handshake runs in the handler's thread: a stalled client never blocks accept().
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


# -- the control API ---------------------------------------------------------------------------
class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _json(self, status: int, doc: Any) -> None:
        body = (json.dumps(doc, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._json(200, {"ok": True, "directory": bool(STATE.directory)})
        elif url.path == "/rules":
            with STATE.lock:
                self._json(200, list(STATE.rules))
        elif url.path == "/log":
            since = float(parse_qs(url.query).get("since", ["0"])[0])
            with STATE.lock:
                self._json(200, [e for e in STATE.log if e["t"] >= since])
        else:
            self._json(404, {"error": "GET /healthz, /rules, /log"})

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/rules":
            self._json(404, {"error": "POST /rules"})
            return
        try:
            doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            added = STATE.add_rules(doc if isinstance(doc, list) else [doc])
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})
            return
        for rule in added:
            log(f"rule {rule['id']}: {json.dumps(rule, sort_keys=True)}")
        self._json(200, added)

    def do_DELETE(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        with STATE.lock:
            if path == "/rules":
                STATE.rules.clear()
            elif path == "/log":
                STATE.log.clear()
                LOG_FILE.unlink(missing_ok=True)
            else:
                self._json(404, {"error": "DELETE /rules or /log"})
                return
        self._json(200, {"ok": True})


class ControlServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "health":
        ctx = ssl.create_default_context(cafile=str(CA_DIR / "ca.pem"))
        try:
            with socket.create_connection(("127.0.0.1", LISTEN_PORT), 2) as raw, \
                    ctx.wrap_socket(raw, server_hostname=NAMES[0]):
                pass
            with socket.create_connection(("127.0.0.1", CONTROL_PORT), 2):
                pass
        except OSError as exc:
            print(f"unhealthy: {exc}")
            return 1
        return 0
    cert, key = make_tls()
    STATE.load()
    now = time.time()
    marker = {"t": now, "time": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(), "method": "-",
              "path": "-", "resource": "proxy-start", "identifiers": [], "action": "-", "rule": None, "status": None}
    STATE.record(marker)
    STATE.persist(marker)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    acme = TLSServer(("0.0.0.0", LISTEN_PORT), ctx)
    control = ControlServer(("0.0.0.0", CONTROL_PORT), ControlHandler)
    threading.Thread(target=control.serve_forever, name="control", daemon=True).start()
    threading.Thread(target=load_directory, name="directory", daemon=True).start()

    def stop(signum: int, _frame: object) -> None:
        log(f"received signal {signum}, stopping")
        threading.Thread(target=acme.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on :{LISTEN_PORT} (TLS, for {', '.join(NAMES)}) -> {UPSTREAM}; control API on :{CONTROL_PORT}")
    acme.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
