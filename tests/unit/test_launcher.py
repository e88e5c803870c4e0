"""certbot's launcher (sidecar/adapters/launcher.py): its protocol, with the real shell scripts of
the exec runner, real processes and a unix socket, and a stand-in ``certbot`` package (a fake
``certbot.main`` that reports what it was given) instead of certbot."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from sidecar.adapters import launcher, launcher_client, runner

LAUNCHER = Path(launcher.__file__)

FAKE_MAIN = '''
import atexit, os, sys, time
from certbot import util

def main(args):
    print("args:", args)
    print("env:", os.environ.get("PROBE"), "cwd:", os.getcwd(), "umask: %o" % os.umask(0o22))
    print("argv0:", sys.argv[0], "pid-is-run:", util._INITIAL_PID == os.getpid())
    print("to stderr", file=sys.stderr)
    with open(os.environ["PIDFILE"], "w") if os.environ.get("PIDFILE") else open(os.devnull, "w") as f:
        f.write(str(os.getpid()))
    util.atexit_register(print, "atexit ran")
    if "sleepy" in args:
        time.sleep(60)
    if "hooked" in args:
        def hook(kind, value, tb):
            print("hook saw:", value, file=sys.stderr)
            sys.exit("advice from the hook")
        sys.excepthook = hook
        raise RuntimeError("rate limited")
    if "boom" in args:
        raise RuntimeError("kaboom")
    if "message" in args:
        return "an error message"
    return int(args[-1]) if args and args[-1].isdigit() else None
'''
FAKE_UTIL = '''
import atexit, os
_INITIAL_PID = os.getpid()

def atexit_register(func, *args):
    atexit.register(_call, func, *args)

def _call(func, *args):
    if _INITIAL_PID == os.getpid():
        func(*args)
'''


@pytest.fixture
def fake_certbot(tmp_path: Path) -> dict[str, str]:
    """A ``certbot`` package (main, util) and a ``certbot`` script naming this interpreter."""
    pkg = tmp_path / "lib" / "certbot"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(FAKE_MAIN)
    (pkg / "util.py").write_text(FAKE_UTIL)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "certbot"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom certbot.main import main\n"
                      "print('plain certbot')\nsys.exit(main(sys.argv[1:]))\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(tmp_path / "lib")}


def _script(text: str, directory: Path) -> str:
    return text.replace(runner.LAUNCHER_DIR, str(directory))


@pytest.fixture
def booted(tmp_path: Path, fake_certbot: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """The certbot container's main process (LAUNCHER_BOOT), until the launcher listens."""
    ldir = tmp_path / "launcher"
    proc = subprocess.Popen(["sh", "-c", _script(runner.LAUNCHER_BOOT, ldir), "certbot-launcher",
                             *runner.launcher_source()], env=fake_certbot, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (ldir / "sock").exists():
            assert time.monotonic() < deadline, "the launcher never listened"
            assert proc.poll() is None
            time.sleep(0.05)
        yield ldir, fake_certbot
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _run(ldir: Path, env: dict[str, str], scratch: Path, limit: int, *args: str,
         cwd: Path | None = None, umask: int = -1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", _script(runner.RUN_SCRIPT, ldir), "certbot-run", str(scratch), str(limit),
                           *args], env=env, capture_output=True, text=True, timeout=30, cwd=cwd, umask=umask)


def test_a_request_survives_encoding() -> None:
    body = launcher_client.encode_request([b"certonly", b"-d", b"a b.example", b""], {b"A": b"1", b"B": b"x=y"},
                                          b"/opt", 0o27)
    assert int.from_bytes(body[:4], "big") == len(body) - 4
    assert launcher.decode_request(body[4:]) == (["certonly", "-d", "a b.example", ""], {"A": "1", "B": "x=y"},
                                                "/opt", 0o27)
    with pytest.raises(ValueError):
        launcher.decode_request(b"9\0/\x0022\x000")
    assert launcher.MARKER == launcher_client.MARKER


def test_exit_codes_are_what_a_shell_would_see() -> None:
    assert launcher.exit_value_code(None) == 0 and launcher.exit_value_code(3) == 3
    assert launcher.exit_value_code(256 + 2) == 2
    assert launcher.shell_code(0x0100) == 1  # exited 1
    assert launcher.shell_code(signal.SIGTERM) == 128 + signal.SIGTERM  # killed by SIGTERM


def test_a_run_through_the_launcher_is_certbot_as_the_client_started_it(
        booted: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    ldir, env = booted
    scratch, cwd = tmp_path / "run-1", tmp_path / "cwd"
    cwd.mkdir()
    done = _run(ldir, {**env, "PROBE": "from-the-exec"}, scratch, 60, "certonly", "-d", "a b.example", "3",
                cwd=cwd, umask=0o027)
    assert done.returncode == 3, done.stderr
    assert "plain certbot" not in done.stdout  # the launcher ran it, not the script
    assert f"args: ['--work-dir', '{scratch}/work', '--logs-dir', '{scratch}/logs', 'certonly', '-d', " \
           "'a b.example', '3']" in done.stdout
    assert f"env: from-the-exec cwd: {cwd} umask: 27" in done.stdout
    assert f"argv0: {Path(env['PATH'].split(':')[0]) / 'certbot'} pid-is-run: True" in done.stdout
    assert "atexit ran" in done.stdout  # certbot's own exit calls run as in a plain run
    assert done.stderr.strip() == "to stderr"  # nothing of the launcher's
    assert not scratch.exists()


def test_exit_values_and_crashes_come_out_as_from_a_plain_certbot(booted: tuple[Path, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    ldir, env = booted
    assert _run(ldir, env, tmp_path / "r1", 60, "certonly").returncode == 0
    message = _run(ldir, env, tmp_path / "r2", 60, "message")
    assert message.returncode == 1 and "an error message" in message.stderr
    boom = _run(ldir, env, tmp_path / "r3", 60, "boom")
    assert boom.returncode == 1 and "RuntimeError: kaboom" in boom.stderr
    # certbot's own hook logs the error and exits with advice, as in a plain run
    hooked = _run(ldir, env, tmp_path / "r4", 60, "hooked")
    assert hooked.returncode == 1
    assert "atexit ran" in hooked.stdout
    assert hooked.stderr.splitlines()[-2:] == ["hook saw: rate limited", "advice from the hook"]


def test_parallel_runs_each_get_their_own_output(booted: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    ldir, env = booted
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def one(i: int) -> None:
        results[i] = _run(ldir, env, tmp_path / f"p{i}", 60, f"site{i}", str(i % 3))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, done in results.items():
        assert done.returncode == i % 3
        assert f"'site{i}'" in done.stdout and done.stdout.count("args:") == 1
    assert len(results) == 8


def test_when_the_time_is_up_certbots_process_is_stopped(booted: tuple[Path, dict[str, str]],
                                                          tmp_path: Path) -> None:
    ldir, env = booted
    pidfile = tmp_path / "certbot.pid"
    started = time.monotonic()
    done = _run(ldir, {**env, "PIDFILE": str(pidfile)}, tmp_path / "r", 1, "sleepy")
    assert done.returncode in runner.TIMEOUT_CODES
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "certbot's process outlived the run"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of another parent is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_dead_launcher_means_a_plain_certbot_and_a_note(booted: tuple[Path, dict[str, str]],
                                                            tmp_path: Path) -> None:
    ldir, env = booted
    server = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).endswith(
        f"{ldir}/launcher.py serve {ldir} " + str(Path(env["PATH"].split(":")[0]) / "certbot")))
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not (ldir / "down").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    done = _run(ldir, env, tmp_path / "r", 60, "certonly", "4")
    assert done.returncode == 4
    assert "plain certbot" in done.stdout
    assert f"{launcher.MARKER} exited with 137; running certbot directly" in done.stderr


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_stale_socket_means_a_plain_certbot_and_a_note(tmp_path: Path, fake_certbot: dict[str, str]) -> None:
    ldir = tmp_path / "launcher"
    ldir.mkdir()
    (ldir / "launcher.py").write_text(runner.launcher_source()[0])
    (ldir / "client.py").write_text(runner.launcher_source()[1])
    (ldir / "python").write_text(sys.executable + "\n")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(ldir / "sock"))
    stale.close()  # the file stays, nobody listens
    done = _run(ldir, fake_certbot, tmp_path / "r", 60, "certonly", "5")
    assert done.returncode == 5 and "plain certbot" in done.stdout
    assert launcher.MARKER in done.stderr and "ConnectionRefusedError" in done.stderr


def test_a_hung_launcher_is_given_up_before_certbot_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "sock")
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(path)
    hung.listen(5)  # never accepts
    monkeypatch.setattr(launcher_client, "READY_TIMEOUT", 0.5)
    mark = tmp_path / "fallback"
    assert launcher_client.client(path, str(mark), ["certonly"]) == 0
    assert mark.exists()
    hung.close()


def test_a_run_lost_after_it_started_is_a_failure_not_a_second_run(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(5)

    def accept_then_die() -> None:
        conn, _ = server.accept()
        _, _, _, _, fds = launcher.read_request(conn)
        for fd in fds:
            os.close(fd)
        conn.sendall(b"ready\n")
        assert conn.recv(3) == b"go\n"
        conn.close()  # the supervisor died mid-run

    t = threading.Thread(target=accept_then_die)
    t.start()
    mark = tmp_path / "fallback"
    assert launcher_client.client(path, str(mark), ["certonly"]) == 1
    assert not mark.exists()
    t.join(5)
    server.close()


def test_the_runner_reports_the_launchers_notes_and_keeps_them_out_of_certbots_output(
        caplog: pytest.LogCaptureFixture) -> None:
    from tests.unit.test_runner import FakeEngine, make
    from sidecar.adapters.docker_api import ExecResult

    note = f"{launcher.MARKER} exited with 1; running certbot directly\n"
    engine = FakeEngine([ExecResult(0, note + "Successfully received certificate.\n"),
                         ExecResult(0, note + "again\n")])
    r = make(engine)
    with caplog.at_level("DEBUG"):
        assert r.run(["certonly"], {}, "a").output == "Successfully received certificate.\n"
        assert r.run(["certonly"], {}, "b").output == "again\n"
    notes = [rec for rec in caplog.records if "certbot launcher" in rec.getMessage()]
    assert [rec.levelname for rec in notes] == ["WARNING", "DEBUG"]  # once a warning, then quiet


def test_the_container_starts_the_launcher_unless_it_is_off() -> None:
    from tests.unit.test_runner import SANDBOX, FakeEngine
    from sidecar.adapters.docker_api import ExecResult

    on = FakeEngine([ExecResult(0, "")])
    runner.ExecRunner(on, SANDBOX, "c", 2).run(["certonly"], {}, "a")  # type: ignore[arg-type]
    assert on.started[0]["command"][:3] == ["-c", runner.LAUNCHER_BOOT, "certbot-launcher"]
    assert "def serve(" in on.started[0]["command"][3]
    off = FakeEngine([ExecResult(0, "")])
    runner.ExecRunner(off, SANDBOX, "c", 2, launcher=False).run(["certonly"], {}, "a")  # type: ignore[arg-type]
    assert off.started[0]["command"] == ["-c", runner.IDLE_SCRIPT]


@pytest.mark.parametrize("args", [["certonly", "3"], ["message"], ["boom"], ["hooked"], []],
                         ids=["exit-code", "sys.exit-message", "exception", "certbots-hook", "no-args"])
def test_through_the_launcher_or_directly_the_same_output_and_exit_code(
        booted: tuple[Path, dict[str, str]], tmp_path: Path, args: list[str]) -> None:
    ldir, env = booted
    via = _run(ldir, env, tmp_path / "run-a", 60, *args)
    (ldir / "sock").unlink()  # now RUN_SCRIPT runs certbot directly
    direct = _run(ldir, env, tmp_path / "run-b", 60, *args)
    assert direct.stdout.startswith("plain certbot\n")
    assert via.returncode == direct.returncode
    assert via.stdout == direct.stdout.removeprefix("plain certbot\n").replace("run-b", "run-a")
    if args == ["boom"]:  # the default hook's traceback: the same but for the outermost frames
        assert via.stderr.splitlines()[-1] == direct.stderr.splitlines()[-1] == "RuntimeError: kaboom"
    else:
        assert via.stderr == direct.stderr.replace("run-b", "run-a")
