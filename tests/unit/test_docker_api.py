"""How the Docker facade reports SDK and transport errors (no engine needed)."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest
import requests.exceptions

from sidecar.adapters.docker_api import _translated, command_name
from sidecar.adapters.runner import RUN_SCRIPT
from sidecar.core.errors import ConfigError, DockerUnavailable


def _api_error(cls: type[docker.errors.APIError], explanation: str) -> docker.errors.APIError:
    return cls("500 Server Error", explanation=explanation)


@pytest.mark.parametrize(
    ("raised", "kwargs", "expected", "message"),
    [
        (_api_error(docker.errors.ImageNotFound, "no such image"), {"image": "certbot/certbot:v4.0.0"},
         ConfigError, "image certbot/certbot:v4.0.0 not found"),
        (_api_error(docker.errors.NotFound, "no such container"), {"container": "0123456789abcdef0123"},
         DockerUnavailable, "container 0123456789ab is gone"),
        (_api_error(docker.errors.NotFound, "no such container"), {},
         DockerUnavailable, "starting x failed: no such container"),
        (_api_error(docker.errors.APIError, "conflict"), {"image": "i", "container": "c"},
         DockerUnavailable, "starting x failed: conflict"),
        (requests.exceptions.ConnectionError("refused"), {}, DockerUnavailable, "starting x failed: refused"),
    ],
)
def test_errors_inside_a_call_are_translated(raised: Exception, kwargs: dict[str, str],
                                             expected: type[Exception], message: str) -> None:
    with pytest.raises(expected, match=message):
        with _translated("starting x", **kwargs):
            raise raised


def test_our_own_errors_pass_through_unchanged() -> None:
    with pytest.raises(ConfigError, match="mine"):
        with _translated("starting x"):
            raise ConfigError("mine")


@pytest.mark.parametrize(
    ("cmd", "name"),
    [
        (["sh", "-c", RUN_SCRIPT, "certbot-run", "/tmp/run-1", "120", "certonly", "--eab-hmac-key", "k3y"],
         "certbot-run certonly"),
        (["sh", "-c", RUN_SCRIPT, "certbot-run", "/tmp/run-1", "120", "register", "--eab-kid", "kid"],
         "certbot-run register"),
        (["nginx", "-t"], "nginx -t"),
        (["nginx", "-s", "reload"], "nginx -s reload"),
        (["/usr/sbin/nginx", "-V"], "nginx -V"),
        (["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"], "cat"),
        (["certbot", "certonly", "--eab-hmac-key", "k3y", "-d", "a.example.com"], "certbot certonly"),
        (["sh", "-c", "echo secret"], "sh -c"),
        ([], "(nothing)"),
    ],
    ids=["runner-certonly", "runner-register", "nginx-t", "nginx-reload", "path", "cat", "certbot", "script",
         "empty"],
)
def test_an_exec_is_named_by_its_program_never_by_its_arguments(cmd: list[str], name: str) -> None:
    assert command_name(cmd) == name


def test_an_engine_error_quoting_a_command_line_loses_the_eab_key() -> None:
    with pytest.raises(DockerUnavailable) as raised:
        with _translated("exec certbot-run certonly"):
            raise _api_error(docker.errors.APIError, "OCI runtime exec failed: certbot --eab-hmac-key k3y-value")
    assert "k3y-value" not in str(raised.value) and "--eab-hmac-key [redacted]" in str(raised.value)


def test_the_process_listing_asks_for_the_main_pid_once_per_container_start() -> None:
    """A reload is watched with a look every 20 ms at first: one API call per look, not two."""
    from types import SimpleNamespace

    from sidecar.adapters.docker_api import Docker

    calls: list[str] = []
    state = {"main": 500, "children": [501, 502]}

    def top(container_id: str) -> dict[str, Any]:
        calls.append("top")
        rows = [["root", str(state["main"]), "400", "nginx: master"]]
        rows += [["nginx", str(c), str(state["main"]), "nginx: worker"] for c in state["children"]]  # type: ignore[union-attr]
        return {"Titles": ["UID", "PID", "PPID", "CMD"], "Processes": rows}

    def inspect_container(container_id: str) -> dict[str, Any]:
        calls.append("inspect")
        return {"State": {"Pid": state["main"]}}

    docker = Docker.__new__(Docker)
    docker._client = SimpleNamespace(api=SimpleNamespace(top=top, inspect_container=inspect_container))  # noqa: SLF001
    docker._main_pids = {}  # noqa: SLF001
    assert docker.children("c" * 64) == {501, 502} and calls == ["top", "inspect"]
    state["children"] = [503, 504]
    assert docker.children("c" * 64) == {503, 504} and calls == ["top", "inspect", "top"]
    state.update(main=900, children=[901])  # the container was restarted: a new main process
    assert docker.children("c" * 64) == {901} and calls[-2:] == ["top", "inspect"]
