"""certbot's launcher: certbot is imported once per certbot container, each run is a fork of it.

This file runs INSIDE the certbot container (any certbot image: no file of ours is in it). The
exec runner passes its source in the container's command (``runner.LAUNCHER_BOOT``), which writes
it to the container's private ``/tmp`` and starts ``serve`` with certbot's own interpreter (the
one its ``certbot`` script names), without ``-I``/``-S``, so certbot imports as a plain run would.

A run is still a ``docker exec`` of ``sh -c RUN_SCRIPT`` in that container; the script starts
``python -I -S client.py SOCKET MARK ARGS...`` (launcher_client.py: builtin modules only, about
0.01 CPU-seconds) instead of ``certbot ARGS...``. Protocol on the unix socket, one connection per run:

    client -> server   length-prefixed request (cwd, umask, arguments, environment) with the
                       client's stdin, stdout and stderr attached (SCM_RIGHTS)
    server             forks a supervisor for the connection and goes back to accept()
    supervisor -> client   b"ready\\n"
    client -> supervisor   b"go\\n"         (from here on the client is committed: no fallback)
    supervisor         forks certbot's process: its own process group, the client's fds on 0, 1
                       and 2, the client's environment, cwd and umask, default signal handlers;
                       runs certbot's main(ARGS) and exits as ``certbot ARGS`` would (atexit too)
    supervisor -> client   b"exit N\\n"     (N as a shell reports it: 128 + signal if killed)

If the client goes away first (``timeout`` stopped it), the supervisor stops certbot's process
group (SIGTERM, SIGKILL 10 s later), as ``timeout`` would have stopped a plain certbot.

If the client cannot connect, or gets no ``ready`` in time, certbot has not started: it creates
the file MARK, prints one line starting with ``MARKER`` on stderr and exits; RUN_SCRIPT then runs
a plain ``certbot``, and the sidecar reports that line (and removes it from the output it parses).

Standard library only, Python 3.9+ (certbot 4 needs it), and nothing of the sidecar is imported.
"""

from __future__ import annotations

import os
import socket
import sys

MARKER = "nginx-acme-sidecar certbot launcher:"  # as launcher_client.MARKER
READY_TIMEOUT = 15.0  # for the client's request and its go (launcher_client waits as long for ready)
KILL_GRACE = 10.0
_MAX_REQUEST = 1 << 20
_VERSION = b"1"


# -- the request -----------------------------------------------------------------------------------

def decode_request(body: bytes) -> tuple[list[str], dict[str, str], str, int]:
    fields = body.split(b"\0")
    if len(fields) < 4 or fields[0] != _VERSION:
        raise ValueError("not a launcher request of this version")
    cwd, umask, argc = os.fsdecode(fields[1]), int(fields[2], 8), int(fields[3])
    args = [os.fsdecode(a) for a in fields[4:4 + argc]]
    if len(args) != argc:
        raise ValueError("truncated request")
    environ = {}
    for entry in fields[4 + argc:]:
        key, sep, value = entry.partition(b"=")
        if sep:
            environ[os.fsdecode(key)] = os.fsdecode(value)
    return args, environ, cwd, umask


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _recv_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
        if len(data) > 64:
            raise ValueError("answer too long")
    return data


def read_request(conn: socket.socket) -> tuple[list[str], dict[str, str], str, int, list[int]]:
    """The request and the three fds that came with it (the caller closes them)."""
    head, fds, _, _ = socket.recv_fds(conn, 4, 8)
    try:
        if len(fds) != 3:
            raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
        head += _recv_exact(conn, 4 - len(head))
        size = int.from_bytes(head, "big")
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        return (*decode_request(_recv_exact(conn, size)), fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


# -- exit codes as a shell reports them -------------------------------------------------------------

def shell_code(status: int) -> int:
    """A wait status as ``$?``: the exit code, or 128 + the signal that killed it."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def exit_value_code(value: object) -> int:
    """What the interpreter makes of ``sys.exit(value)``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


# -- certbot's process -----------------------------------------------------------------------------

def run_main(main: object, args: list[str], environ: dict[str, str], cwd: str, umask: int,
             fds: list[int], program: str) -> None:
    """In the forked process: become ``certbot ARGS`` started by the client, then exit. Never returns."""
    import atexit
    import signal

    code = 1
    try:
        os.setpgid(0, 0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        os.umask(umask)
        sys.argv = [program, *args]
        util = sys.modules.get("certbot.util")
        if util is not None and hasattr(util, "_INITIAL_PID"):
            # certbot runs its atexit calls only in the process that imported it (not in children
            # of certbot's hooks): this process is the run, as a plain `certbot` would be.
            setattr(util, "_INITIAL_PID", os.getpid())
        try:
            code = exit_value_code(main(args))  # type: ignore[operator]
        except SystemExit as exc:
            code = exit_value_code(exc.code)
        except BaseException:
            # As the interpreter does with an uncaught exception: the hook (certbot's logs the error
            # and ends with sys.exit(advice), which counts as that exit).
            try:
                sys.excepthook(*sys.exc_info())
                code = 1
            except SystemExit as exc:
                code = exit_value_code(exc.code)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - nothing left to report it to
                pass
        os._exit(code)


def _wait(pid: int, conn: socket.socket) -> int:
    """Wait for certbot's process; if the client goes away first, stop its process group."""
    import select
    import signal
    import time

    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLHUP)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    killed_at = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return shell_code(status)
            now = time.monotonic()
            if killed_at is not None and now - killed_at > KILL_GRACE:
                _killpg(pid, signal.SIGKILL)
            events = poller.poll(200 if pidfd < 0 or killed_at is not None else None)
            if killed_at is None and any(fd == conn.fileno() for fd, _ in events):
                # The client is gone (stopped by `timeout`, or the exec ended): stop certbot too.
                _killpg(pid, signal.SIGTERM)
                killed_at = now
                poller.unregister(conn.fileno())
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def supervise(conn: socket.socket, main: object, program: str) -> int:
    """One run, in the forked supervisor: returns its exit code (for the supervisor's own exit)."""
    import signal

    conn.settimeout(READY_TIMEOUT)
    args, environ, cwd, umask, fds = read_request(conn)
    try:
        conn.sendall(b"ready\n")
        if _recv_line(conn) != b"go\n":
            return 2
        conn.settimeout(None)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            conn.close()
            run_main(main, args, environ, cwd, umask, fds, program)
        try:
            os.setpgid(pid, pid)  # also done by the child; whichever comes first
        except OSError:
            pass
    finally:
        for fd in fds:
            os.close(fd)
    code = _wait(pid, conn)
    try:
        conn.sendall(b"exit %d\n" % code)
    except OSError:
        pass
    return 0


# -- the server ------------------------------------------------------------------------------------

def load_certbot() -> object:
    """Import certbot (and its plugins) now, once: every run's fork inherits them."""
    from certbot.main import main
    try:
        from certbot._internal.plugins import disco
        disco.PluginsRegistry.find_all()
    except Exception:  # noqa: BLE001 - only a warm-up: each run finds its plugins itself
        pass
    return main


def serve(directory: str, program: str, load: object = load_certbot) -> None:
    """Listen on DIRECTORY/sock (it appears once certbot is imported) and fork a supervisor per run."""
    import signal

    main = load()  # type: ignore[operator]
    path = os.path.join(directory, "sock")
    tmp = path + ".%d" % os.getpid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    listener.listen(256)
    os.rename(tmp, path)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    print(f"{MARKER} ready (certbot imported once, each run a fork)", file=sys.stderr, flush=True)
    while True:
        conn, _ = listener.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                listener.close()
                code = supervise(conn, main, program)
            except BaseException as exc:  # noqa: BLE001 - the client falls back or reports it
                print(f"{MARKER} run failed in the launcher: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                sys.stderr.flush()
                os._exit(code)
        conn.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        # python launcher.py serve DIR CERTBOT: without our directory on sys.path, as certbot's
        # own script would import.
        if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.abspath(sys.argv[2]):
            del sys.path[0]
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: launcher.py serve DIR CERTBOT")
