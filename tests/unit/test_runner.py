"""Where certbot runs: the exec runner's container handling (with a fake engine) and its run
script (with the real shell and a stand-in certbot on PATH)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import pytest

from sidecar.adapters import runner
from sidecar.adapters.docker_api import ExecResult, RunResult
from sidecar.core.errors import DockerUnavailable

SANDBOX = runner.Sandbox(image="certbot/certbot:v4.0.0", volumes={"certs": {"bind": "/etc/letsencrypt", "mode": "rw"}},
                         network_mode="container:abc", labels={"role": "certbot"}, timeout=300)


class FakeEngine:
    """Records what the runner asks of the engine; ``exec_results`` are answered in order."""

    def __init__(self, exec_results: list[ExecResult | Exception]) -> None:
        self.exec_results = exec_results
        self.started: list[dict[str, Any]] = []
        self.execs: list[tuple[str, list[str], Mapping[str, str] | None, float | None]] = []
        self.running: set[str] = set()
        self.removed: list[str] = []

    def start_detached(self, image: str, command: list[str], **kw: Any) -> str:
        cid = f"c{len(self.started)}"
        self.started.append({"image": image, "command": command, **kw})
        self.running.add(cid)
        return cid

    def is_running(self, cid: str) -> bool:
        return cid in self.running

    def exec(self, cid: str, cmd: list[str], *, environment: Mapping[str, str] | None = None,
             timeout: float | None = None) -> ExecResult:
        self.execs.append((cid, cmd, environment, timeout))
        result = self.exec_results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def remove(self, cid: str) -> None:
        self.removed.append(cid)
        self.running.discard(cid)


def make(engine: FakeEngine, timeout: float = 300) -> runner.ExecRunner:
    sandbox = runner.Sandbox(**{**SANDBOX.__dict__, "timeout": timeout})
    return runner.ExecRunner(engine, sandbox, "stack-sidecar-1-certbot", parallel=4)  # type: ignore[arg-type]


def test_one_container_serves_every_run_each_with_its_own_scratch_dir() -> None:
    engine = FakeEngine([ExecResult(0, "issued a"), ExecResult(1, "failed b")])
    r = make(engine)
    first = r.run(["certonly", "-d", "a.example"], {"REQUESTS_CA_BUNDLE": "/x"}, "a")
    second = r.run(["certonly", "-d", "b.example"], {}, "b")
    assert (first, second) == (RunResult(0, "issued a"), RunResult(1, "failed b"))
    assert len(engine.started) == 1
    started = engine.started[0]
    assert started["name"] == "stack-sidecar-1-certbot" and started["runs"] == 4
    assert started["labels"] == {"role": "certbot"} and started["network_mode"] == "container:abc"
    (c1, cmd1, env1, t1), (c2, cmd2, _, _) = engine.execs
    assert c1 == c2 == "c0"
    assert cmd1[-3:] == ["certonly", "-d", "a.example"] and env1 == {"REQUESTS_CA_BUNDLE": "/x"}
    assert cmd1[5] == "300" and t1 is not None and t1 > 300  # certbot is stopped before the API gives up
    assert cmd1[4] != cmd2[4] and cmd1[4].startswith("/tmp/run-")


def test_a_vanished_container_is_replaced_once() -> None:
    engine = FakeEngine([ExecResult(0, "ok"), DockerUnavailable("container c0 is gone"), ExecResult(0, "again")])
    r = make(engine)
    r.run(["certonly"], {}, "a")
    engine.running.discard("c0")  # someone removed it
    assert r.run(["certonly"], {}, "b") == RunResult(0, "again")
    assert [e[0] for e in engine.execs] == ["c0", "c0", "c1"]


def test_an_engine_error_with_the_container_still_there_is_reported() -> None:
    engine = FakeEngine([DockerUnavailable("exec failed: engine busy")])
    with pytest.raises(DockerUnavailable, match="engine busy"):
        make(engine).run(["certonly"], {}, "a")
    assert len(engine.started) == 1


def test_an_image_without_a_shell_gets_a_clear_error() -> None:
    from sidecar.core.errors import ConfigError

    class NoShell(FakeEngine):
        def start_detached(self, image: str, command: list[str], **kw: Any) -> str:
            raise DockerUnavailable('starting x failed: OCI runtime create failed: exec: "sh": '
                                    "executable file not found in $PATH: unknown")

    with pytest.raises(ConfigError, match="CERTBOT_RUNNER=container"):
        make(NoShell([])).run(["certonly"], {}, "a")


def test_timeout_exit_code_counts_as_timeout_only_when_the_time_was_up() -> None:
    quick = FakeEngine([ExecResult(124, "certbot's own exit 124")])
    assert make(quick).run(["certonly"], {}, "a") == RunResult(124, "certbot's own exit 124")
    slow = FakeEngine([ExecResult(124, "")])
    assert make(slow, timeout=1).run(["certonly"], {}, "a").exit_code is None


def test_close_removes_the_container_and_a_later_run_starts_a_new_one() -> None:
    engine = FakeEngine([ExecResult(0, ""), ExecResult(0, "")])
    r = make(engine)
    r.run(["certonly"], {}, "a")
    r.close()
    assert engine.removed == ["c0"]
    r.run(["certonly"], {}, "a")
    assert len(engine.started) == 2


# -- the shell scripts, run by the real sh --------------------------------------------------
@pytest.fixture
def fake_certbot(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "certbot"
    script.write_text('#!/bin/sh\necho "args: $*"\nls -d "$2" "$4" && echo scratch-ok\n'
                      'case "$*" in *sleepy*) sleep 30;; esac\nexit "${CODE:-0}"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _run(env: dict[str, str], scratch: Path, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", runner.RUN_SCRIPT, "certbot-run", str(scratch), str(limit), *args],
                          env=env, capture_output=True, text=True, timeout=20)


def test_run_script_gives_certbot_private_scratch_dirs_and_removes_them(tmp_path: Path,
                                                                       fake_certbot: dict[str, str]) -> None:
    scratch = tmp_path / "run-1"
    done = _run({**fake_certbot, "CODE": "3"}, scratch, 60, "certonly", "-d", "a b.example")
    assert done.returncode == 3
    assert f"args: --work-dir {scratch}/work --logs-dir {scratch}/logs certonly -d a b.example" in done.stdout
    assert "scratch-ok" in done.stdout
    assert not scratch.exists()


def test_parallel_runs_never_share_certbots_lock_dirs(tmp_path: Path, fake_certbot: dict[str, str]) -> None:
    """certbot locks its work dir: the real arguments must leave the runner's scratch dirs in force."""
    from sidecar.core import certbot
    from sidecar.core.planner import Action
    from sidecar.core.settings import Settings

    args = certbot.arguments(Settings(acme_server="https://ca.test/dir"), "a.example", ("a.example",), Action.ISSUE)
    seen = []
    for run in ("run-a", "run-b"):
        words = _run(fake_certbot, tmp_path / run, 60, *args).stdout.split()
        seen.append([words[i + 1] for i, w in enumerate(words) if w in ("--work-dir", "--logs-dir")])
    assert seen == [[f"{tmp_path}/{r}/work", f"{tmp_path}/{r}/logs"] for r in ("run-a", "run-b")]


def test_run_script_stops_certbot_when_the_time_is_up(tmp_path: Path, fake_certbot: dict[str, str]) -> None:
    scratch = tmp_path / "run-2"
    started = time.monotonic()
    done = _run(fake_certbot, scratch, 1, "sleepy")
    assert time.monotonic() - started < 10
    assert done.returncode in runner.TIMEOUT_CODES
    assert not scratch.exists()


def test_idle_script_stops_at_once_on_sigterm() -> None:
    proc = subprocess.Popen(["sh", "-c", runner.IDLE_SCRIPT])
    time.sleep(0.3)
    started = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 2
