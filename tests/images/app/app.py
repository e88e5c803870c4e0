#!/usr/bin/env python3
"""Tiny stand-in for hashicorp/http-echo, standard library only.

Same command line: -listen=:5678 (default) -text="hello" [-status-code=200] [-version].
Flags may be written -flag=value, --flag=value or -flag value, as Go's flag package accepts.
Every request (any method, any path) gets the text plus a newline; /health gets {"status":"ok"}.
SIGTERM/SIGINT exit at once, so `docker stop` is quick (as PID 1 we need our own handler).
"""
import http.server
import signal
import sys

VERSION = "1.0.0-standin"


def die(msg, code=2):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(code)


def parse_args(argv):
    opts = {"listen": ":5678", "text": None, "status-code": "200", "version": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            die(f"unexpected argument: {arg}")
        name, eq, value = arg.lstrip("-").partition("=")
        if name not in opts:
            die(f"flag provided but not defined: -{name}")
        if name == "version":
            value = "true"
        elif not eq:
            i += 1
            if i >= len(argv):
                die(f"flag needs an argument: -{name}")
            value = argv[i]
        opts[name] = value
        i += 1
    return opts


def main():
    opts = parse_args(sys.argv[1:])
    if opts["version"]:
        print(f"http-echo v{VERSION}")
        return
    if opts["text"] is None:
        die("Missing -text option!", 127)
    host, _, port = opts["listen"].rpartition(":")
    try:
        port, status = int(port), int(opts["status-code"])
    except ValueError:
        die(f"invalid -listen or -status-code: {opts['listen']!r} {opts['status-code']!r}")
    body = (opts["text"] + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive, with Content-Length always set

        def version_string(self):
            return "http-echo"

        def answer(self):
            # Drain any request body so a keep-alive connection stays in sync.
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(length)
            if self.path.split("?")[0] == "/health":
                code, payload, ctype = 200, b'{"status":"ok"}\n', "application/json"
            else:
                code, payload, ctype = status, body, "text/plain; charset=utf-8"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-App-Name", "http-echo")
            self.send_header("X-App-Version", VERSION)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = answer

        def log_message(self, fmt, *args):
            print(f"{self.address_string()} {fmt % args}", file=sys.stderr, flush=True)

    def stop(signum, _frame):
        sys.exit(0)   # raised in the main thread: leaves serve_forever() at once

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", port), Handler)
    print(f"[http-echo stand-in] listening on {opts['listen']}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
