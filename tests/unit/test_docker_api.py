"""How the Docker facade reports SDK and transport errors (no engine needed)."""

from __future__ import annotations

import docker.errors
import pytest
import requests.exceptions

from sidecar.adapters.docker_api import _translated
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
