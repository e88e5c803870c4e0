"""Records alerts for the end-to-end tests, or fronts the Docker socket read-only.

    receiver.py sink          SMTP :2525 -> /data/mail/NNNN.json, HTTP POST :8000 -> /data/webhook/NNNN.json
    receiver.py dump          print {"mail": [...], "webhook": [...]} (every record, oldest first)
    receiver.py dockerproxy   tcp :2375 -> unix /var/run/docker.sock, GET/HEAD only, one request per connection
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(os.environ.get("DATA_DIR", "/data"))
_counter = itertools.count(1)
_lock = threading.Lock()


def record(kind: str, doc: dict) -> None:
    directory = DATA / kind
    directory.mkdir(parents=True, exist_ok=True)
    with _lock:
        n = next(_counter)
    tmp = directory / f".{n:04d}.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, directory / f"{n:04d}.json")
    print(f"recorded {kind} {n:04d}", flush=True)


class MailHandler:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))
        record("mail", {
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "subject": str(msg.get("Subject", "")),
            "body": body.get_content() if body is not None else "",
        })
        return "250 OK"


class WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record("webhook", {"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


async def sink() -> None:
    from aiosmtpd.smtp import SMTP

    DATA.mkdir(parents=True, exist_ok=True)
    httpd = ThreadingHTTPServer(("0.0.0.0", 8000), WebhookHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(MailHandler()), "0.0.0.0", 2525)
    print("receiver: SMTP on :2525, webhooks on :8000", flush=True)
    async with server:
        await server.serve_forever()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _proxy_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    if method not in ("GET", "HEAD"):
        body = b'{"message":"read-only Docker proxy"}'
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()
        return
    # One request per connection: the client sees "Connection: close" and opens a new one.
    kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(("connection:", "keep-alive:"))]
    request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
    try:
        up_reader, up_writer = await asyncio.open_unix_connection("/var/run/docker.sock")
    except OSError:
        writer.close()
        return
    up_writer.write(request)
    await up_writer.drain()
    await _pipe(up_reader, writer)
    up_writer.close()


async def dockerproxy() -> None:
    server = await asyncio.start_server(_proxy_one, "0.0.0.0", 2375)
    print("dockerproxy: read-only Docker API on :2375", flush=True)
    async with server:
        await server.serve_forever()


def dump() -> None:
    out = {}
    for kind in ("mail", "webhook"):
        directory = DATA / kind
        files = sorted(directory.glob("[0-9]*.json")) if directory.is_dir() else []
        out[kind] = [json.loads(f.read_text()) for f in files]
    print(json.dumps(out))


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else "sink"
    if role == "dump":
        dump()
    elif role == "dockerproxy":
        asyncio.run(dockerproxy())
    else:
        asyncio.run(sink())
