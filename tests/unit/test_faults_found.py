"""Bugs the end-to-end fault tests (tests/e2e/test_faults.py) found, pinned down in unit tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from sidecar.state import files

from sidecar.core import settings
from sidecar.core.model import ContainerInfo
from sidecar.sources.containers import find_nginx

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


# -- a killed sidecar leaves temporary files of atomic_write ---------------------------
def test_remove_temp_files_removes_only_atomic_write_leftovers(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "state" / "certbot-logs" / "a.example").mkdir(parents=True)
    debris = [tmp_path / "conf" / ".sidecar-tmp-abc",
              tmp_path / "state" / "certbot-logs" / "a.example" / ".sidecar-tmp-x"]
    keep = [tmp_path / "conf" / "sidecar-site-a.conf", tmp_path / "conf" / "default.conf",
            tmp_path / "state" / "x.json"]
    for p in debris + keep:
        p.write_text("x")
    removed = files.remove_temp_files([tmp_path / "conf", tmp_path / "state", tmp_path / "missing"])
    assert sorted(removed) == sorted(str(p) for p in debris)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in debris)


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    files.atomic_write(tmp_path / "f.conf", "a")
    files.atomic_write(tmp_path / "f.conf", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["f.conf"]
    assert files.remove_temp_files([tmp_path]) == []


# -- while its own nginx is re-created, a sidecar took another stack's nginx ------------------
def _container(name: str, project: str | None, networks: list[str], nginx: bool = True) -> ContainerInfo:
    labels = {"acme.nginx": "true"} if nginx else {}
    if project:
        labels["com.docker.compose.project"] = project
    return ContainerInfo(id=name * 4, name=name, labels=labels, networks={n: "10.0.0.2" for n in networks})


@pytest.mark.parametrize(
    ("me", "candidates", "chosen"),
    [
        pytest.param(_container("me", "a", ["a_net"], False), [_container("a-nginx", "a", ["a_net"]),
                     _container("b-nginx", "b", ["b_net"])], "a-nginx", id="own-project-wins"),
        pytest.param(_container("me", "a", ["a_net"], False), [_container("b-nginx", "b", ["b_net"]),
                     _container("c-nginx", "c", ["c_net"])], None, id="others-only-several"),
        pytest.param(_container("me", "a", ["a_net"], False), [_container("b-nginx", "b", ["b_net"])], None,
                     id="others-only-one"),
        pytest.param(_container("me", "a", ["web"], False), [_container("n", "x", ["web"])], "n",
                     id="other-project-on-a-shared-network"),
        pytest.param(_container("me", "a", ["a_net"], False), [_container("n", None, ["web"])], "n",
                     id="lone-nginx-outside-compose"),
        pytest.param(_container("me", None, ["bridge"], False), [_container("n", "x", ["web"])], "n",
                     id="sidecar-outside-compose"),
    ],
)
def test_find_nginx_never_takes_another_stacks_nginx(
    tmp_path: Path, me: ContainerInfo, candidates: list[ContainerInfo], chosen: str | None,
) -> None:
    cfg = settings.load({"STATE_DIR": str(tmp_path), "RATE_LIMITS": "off"})
    found, _warning = find_nginx([me, *candidates], cfg, me)
    assert (found.name if found else None) == chosen


# -- urlsplit drops tabs and newlines, so "http://ap\tp" meant "http://app" ----------------------
@pytest.mark.parametrize("url", ["http://ap\tp:80", "http://app\n:80", "http://app:8\r0", "http://a pp:80",
                                 "http://app:8\x0b0"])
def test_sites_file_upstream_with_whitespace_or_control_characters_is_refused(url: str) -> None:
    from sidecar.sources import sitesfile

    with pytest.raises(ValueError, match="spaces and control characters"):
        sitesfile.parse_upstream(url)


def test_the_clean_up_spares_this_processs_own_temporary_files(tmp_path: Path) -> None:
    """It may run in the background while this process writes (the certificates' volume)."""
    mine = tmp_path / (files.OWN_TEMP_PREFIX + "abc")
    killed = tmp_path / ".sidecar-tmp-1.0123abcd.xyz"
    for p in (mine, killed):
        p.write_text("x")
    assert files.remove_temp_files([tmp_path]) == [str(killed)]
    assert mine.exists() and not killed.exists()
