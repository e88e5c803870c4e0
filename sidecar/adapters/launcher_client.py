"""The client of certbot's launcher (see launcher.py): one per certbot run, inside the certbot container.

Started by the exec runner's RUN_SCRIPT as ``python -I -S client.py SOCKET MARK ARGS...``. It uses
only modules built into the interpreter (``_socket``, ``posix``, ``sys``: not even ``os`` or
``socket``, whose imports cost more than the rest of the client), hands its stdin, stdout and
stderr, arguments, environment, working directory and umask to the launcher, and exits with the
exit code of the certbot run the launcher forked. If certbot could not be started it creates MARK
and says why in one line starting with MARKER; RUN_SCRIPT then runs a plain certbot.
"""

import _socket
import posix
import sys

MARKER = "nginx-acme-sidecar certbot launcher:"
VERSION = b"1"
CONNECT_TIMEOUT = 5.0
READY_TIMEOUT = 15.0  # the launcher forks a supervisor at once; this long only on a stalled machine


def encode_request(args: list[bytes], environ: dict[bytes, bytes], cwd: bytes, umask: int) -> bytes:
    """Length-prefixed, NUL-separated: version, cwd, umask (octal), argc, arguments, KEY=VALUE..."""
    fields = [VERSION, cwd, b"%o" % umask, b"%d" % len(args), *args]
    fields += [k + b"=" + v for k, v in environ.items()]
    body = b"\0".join(fields)
    return len(body).to_bytes(4, "big") + body


def _recv_line(conn: _socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
        if len(data) > 64:
            raise ValueError("answer too long")
    return data


def fallback(mark: str, reason: str) -> int:
    """certbot has not started: leave MARK for RUN_SCRIPT, which runs a plain certbot."""
    try:
        posix.close(posix.open(mark, posix.O_WRONLY | posix.O_CREAT, 0o600))
    except OSError:
        pass
    sys.stderr.write(f"{MARKER} {reason}; running certbot directly\n")
    sys.stderr.flush()
    return 0


def client(sock_path: str, mark: str, args: list[str]) -> int:
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        return _client(conn, sock_path, mark, args)
    finally:
        conn.close()


def _client(conn: _socket.socket, sock_path: str, mark: str, args: list[str]) -> int:
    encoding = sys.getfilesystemencoding()
    umask = posix.umask(0o022)
    posix.umask(umask)
    request = encode_request([a.encode(encoding, "surrogateescape") for a in args], dict(posix.environ),
                             posix.getcwd().encode(encoding, "surrogateescape"), umask)
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        conn.connect(sock_path)
        fds = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
        conn.sendmsg([request[:4]], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        conn.sendall(request[4:])
        conn.settimeout(READY_TIMEOUT)
        if _recv_line(conn) != b"ready\n":
            return fallback(mark, "unexpected answer from the launcher")
        conn.sendall(b"go\n")
    except (OSError, EOFError, ValueError) as exc:
        return fallback(mark, f"launcher unavailable ({type(exc).__name__}: {exc})")
    # From here on certbot runs: whatever happens, no second run.
    conn.settimeout(None)
    try:
        answer = _recv_line(conn)
    except (OSError, EOFError, ValueError) as exc:
        sys.stderr.write(f"certbot launcher: the run was lost ({type(exc).__name__}: {exc})\n")
        return 1
    if not answer.startswith(b"exit "):
        sys.stderr.write(f"certbot launcher: unexpected answer {answer!r}\n")
        return 1
    return int(answer[5:])


if __name__ == "__main__":
    sys.exit(client(sys.argv[1], sys.argv[2], sys.argv[3:]))
