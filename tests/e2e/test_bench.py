"""The benchmark scripts still work (issue 8): a smoke run of each, small sizes, sidecar only.

Not timed: the numbers they print are checked for sense, not for speed (the README's
Performance section has the measured ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .stack import IMAGES, ROOT


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **IMAGES}, cwd=ROOT)


def test_burst_benchmark_smoke(tmp_path: Path) -> None:
    done = _run("run.py", "--sizes", "1", "--tools", "sidecar", "--idle-seconds", "0", "--no-latest",
                "--pebble-retry-after", "off", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    [run] = data["runs"]
    assert run["error"] is None and run["tool"] == "sidecar"
    assert list(run["per_site"]) == ["s1.bench.test"] and run["per_site"]["s1.bench.test"] > 0
    # one certificate request, exec'd in the certbot container started before the burst
    assert (run["certbot_runs"], run["certbot_containers"], run["reloads"]) == (1, 0, 1), run
    assert "| 1 | sidecar | 1 of 1 |" in result.with_suffix(".md").read_text()


def test_startup_benchmark_smoke(tmp_path: Path) -> None:
    done = _run("startup.py", "--certs", "30", "--no-latest", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = tmp_path.glob("startup-*.json")
    first, restart = json.loads(result.read_text())["runs"][0]["starts"]
    for start in (first, restart):
        assert start["error"] is None, start
        assert (start["sites"], start["on_disk"], start["requested"], start["certbot_runs"]) == (30, 30, 0, 0), start
        assert 0 < start["planned_s"] <= start["pass_done_s"]
    assert first["reloads"] == 1 and restart["reloads"] == 0  # the restart finds nginx up to date
