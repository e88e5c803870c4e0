#!/usr/bin/env python3
"""A filtering Docker socket proxy: TCP :2375 in front of /var/run/docker.sock.

Like tecnativa/docker-socket-proxy, but the allow-list is exact: one line per
endpoint, ``METHOD /path-regex`` (the API version prefix ``/v1.41`` is stripped
before matching), from the environment variable ALLOW (newline separated).
Without ALLOW everything passes. Every request is logged on one line:

    ALLOW GET /containers/json
    DENY POST /containers/abc/exec        (answered 403, never reaches the engine)

Each request gets its own connection to the engine (``Connection: close`` is
forced, except for upgrades such as ``exec start``), so every request on a
keep-alive client connection is checked, not only the first one.
Standard library only (python3 from Debian).
"""
import os
import re
import signal
import socket
import socketserver
import sys
import threading

SOCKET = os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")
PORT = int(os.environ.get("PORT", "2375"))
_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")


def load_rules(text):
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        method, _, pattern = line.partition(" ")
        rules.append((method.upper(), re.compile(pattern.strip() + r"$")))
    return rules


RULES = load_rules(os.environ["ALLOW"]) if os.environ.get("ALLOW") else None


def allowed(method, path):
    if RULES is None:
        return True
    return any(m == method and rx.match(path) for m, rx in RULES)


_LOG_LOCK = threading.Lock()


def log(line):
    with _LOG_LOCK:  # one whole line at a time from the handler threads
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        client = self.request
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = client.recv(65536)
            if not chunk:
                return
            buf += chunk
            if len(buf) > 1 << 20:
                return
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, proto = lines[0].split(" ", 2)
        except ValueError:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return
        path = _VERSION.sub("", target.split("?", 1)[0], count=1)
        if not allowed(method, path):
            log(f"DENY {method} {path}")
            body = b'{"message":"forbidden by the socket proxy"}'
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        log(f"ALLOW {method} {path}")
        headers = lines[1:]
        upgrade = any(h.lower().startswith("upgrade:") for h in headers)
        if not upgrade:
            headers = [h for h in headers if not h.lower().startswith(("connection:", "keep-alive:"))]
            headers.append("Connection: close")
        engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            engine.connect(SOCKET)
        except OSError as exc:
            log(f"ERROR engine unreachable: {exc}")
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            engine.close()
            return
        with engine:
            engine.sendall(("\r\n".join([lines[0], *headers]) + "\r\n\r\n").encode("latin-1") + rest)
            upstream = threading.Thread(target=pump, args=(client, engine), daemon=True)
            upstream.start()
            pump(engine, client)
            upstream.join(5)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(("0.0.0.0", PORT), Handler) as server:
        log(f"dockerproxy on :{PORT} -> {SOCKET} ({'all requests' if RULES is None else f'{len(RULES)} rules'})")
        server.serve_forever()


if __name__ == "__main__":
    main()
