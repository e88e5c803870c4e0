"""What the chaos run (tests/e2e/test_chaos.py) found, each pinned by a unit test with the loop's fakes.

A full conf volume while a certificate was issued: the new site's file could not be written, the
previous files were restored, and nothing but the next timed pass (up to 5 minutes later, or a
Docker event that happened to come) wrote it again once there was room: the site had its
certificate and was not served meanwhile. Freeing space is no event the sidecar sees.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters import nginx as nginx_adapter
from sidecar.core.events import Kind
from sidecar.sources.triggers import MAX_SLEEP

from .test_loop import NOW, _no_psl, app, make  # noqa: F401 - (_no_psl: its autouse fixture)


def test_nginx_files_that_could_not_be_written_are_written_again_soon(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")])
    r.run_pass()
    full = [True]
    real = nginx_adapter.atomic_write

    def write(path: Path, content: Any, *args: Any, **kwargs: Any) -> None:
        if full[0] and path.parent == r.settings.conf_dir:
            raise OSError(28, "No space left on device")
        real(path, content, *args, **kwargs)

    monkeypatch.setattr(nginx_adapter, "atomic_write", write)
    docker.containers.append(app("b", "b.example.com"))
    next_due = r.run_pass()
    assert Kind.CERT_ISSUED in seen.kinds("b.example.com") and Kind.SITE_LIVE not in seen.kinds("b.example.com")
    assert (r.settings.conf_dir / "sidecar-site-a.example.com.conf").is_file()  # the previous files stay
    assert not (r.settings.conf_dir / "sidecar-site-b.example.com.conf").exists()
    # Tried again within seconds, not at the next timed pass.
    assert next_due is not None and next_due <= NOW + timedelta(seconds=5)
    # Still full: the retries back off (to at most the timer's own period).
    waits = [(r.run_pass() or NOW + MAX_SLEEP) - NOW for _ in range(8)]
    assert waits == sorted(waits) and waits[1] > waits[0] and waits[-1] == MAX_SLEEP, waits
    assert certbot.runs.count("b.example.com") == 1  # (the certificate is not asked for again)

    full[0] = False  # room again: the next pass writes the file, and the site goes live
    r.run_pass()
    assert Kind.SITE_LIVE in seen.kinds("b.example.com")
    assert (r.settings.conf_dir / "sidecar-site-b.example.com.conf").is_file()
    assert r.run_pass() is not None and r.run_pass() > NOW + MAX_SLEEP  # nothing to retry any more
