"""The project's exception tree.

    SidecarError
    ├── ConfigError            bad environment or settings: permanent until restarted with new input
    ├── InputError             a bad label, YAML entry or value; carries ``source`` (where it came from)
    ├── TransientError         worth retrying with back-off (Docker or the CA unreachable, 5xx)
    │   └── DockerUnavailable  the Docker API could not be reached
    ├── NginxError             nginx rejected a config (``nginx -t``) or a reload failed
    └── CertbotError           a certbot run failed; ``failure`` says how (see ``certbot.Failure``)

Third-party exceptions are mapped at the boundary (``raise ... from exc``) so the
rest of the code only ever sees these.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SidecarError):
    """The sidecar's own configuration (environment) is invalid."""


class InputError(SidecarError):
    """A site definition is invalid. ``source`` names where it came from."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class TransientError(SidecarError):
    """A failure that may go away by itself; retried with back-off."""


class DockerUnavailable(TransientError):
    """The Docker API did not answer."""


class NginxError(SidecarError):
    """nginx refused a configuration or a signal."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class CertbotError(SidecarError):
    """A certbot run failed."""
