"""Consumers: containers that use a certificate themselves (a mail server, a database, an MQTT
broker) and are told when it changes. Pure: no Docker, no files, ``now`` passed in.

    label acme.consumer=NAMES          the certificate for NAMES exists: the vhost site with exactly
                                       those names (first name first) if there is one, else a site of
                                       its own that nginx never serves (HTTP-01 still works through
                                       the catch-all port-80 server)
    label acme.consumer.signal=HOW     after each issue or renewal: ``restart`` (default), a signal
                                       (``SIGHUP``, ``SIGUSR1``, ...), ``exec:<command>``, or ``none``

The files are certbot's: ``CERTS_DIR/live/<first name>/fullchain.pem`` and ``privkey.pem``.

What a consumer container has is tracked per container (``Delivery``): first seen, it has the
certificate on disk then (it read it when it started); afterwards every new serial is delivered
once. A failed delivery is retried on the back-off schedule, never blocking anything else.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Iterable, Mapping

from sidecar.core.planner import backoff_delay

SIGNAL_NAMES = ("HUP", "INT", "QUIT", "USR1", "USR2", "TERM", "KILL", "WINCH", "ALRM", "CONT", "PWR")
EXEC_PREFIX = "exec:"


@dataclass(frozen=True)
class Signal:
    """How a consumer is told: ``restart``, ``signal`` (``name``), ``exec`` (``command``) or ``none``."""

    how: str = "restart"
    name: str = ""                      # "SIGHUP" for how == "signal"
    command: tuple[str, ...] = ()       # argv for how == "exec"

    def __str__(self) -> str:
        # An exec'd command may carry a password on its command line: only its program is shown.
        if self.how == "exec":
            return f"exec {self.command[0].rsplit('/', 1)[-1]}"
        return self.name if self.how == "signal" else self.how


def parse_signal(raw: str) -> Signal:
    """``restart`` | ``none`` | ``SIGHUP`` (or ``HUP``, any case) | ``exec:<command>``; ValueError says why not."""
    value = raw.strip()
    if value.lower().startswith(EXEC_PREFIX):
        try:
            argv = tuple(shlex.split(value[len(EXEC_PREFIX):]))
        except ValueError as exc:
            raise ValueError(f"exec: command does not parse ({exc})") from exc
        if not argv:
            raise ValueError("exec: needs a command, e.g. exec:nginx -s reload")
        return Signal("exec", command=argv)
    if value.lower() in ("restart", "none"):
        return Signal(value.lower())
    name = value.upper().removeprefix("SIG")
    if name in SIGNAL_NAMES:
        return Signal("signal", name="SIG" + name)
    raise ValueError(f"{value[:40]!r} is not restart, none, exec:<command> or a signal "
                     f"({', '.join('SIG' + n for n in SIGNAL_NAMES)})")


@dataclass(frozen=True)
class Consumer:
    """One container that uses the certificate ``cert_name`` and wants to be told when it changes."""

    container_id: str
    container: str                  # its name, for messages
    domains: tuple[str, ...]
    cert_name: str
    signal: Signal = Signal()


@dataclass(frozen=True)
class Delivery:
    """What one consumer container has: the serial of the certificate it was last given (None: none
    on disk yet), and failed attempts to give it the current one."""

    cert_name: str
    serial: int | None
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str = ""

    def to_json(self) -> dict[str, object]:
        return {"cert": self.cert_name, "serial": None if self.serial is None else f"{self.serial:x}",
                "failures": self.failures, "retry_at": self.retry_at.isoformat() if self.retry_at else None,
                "last_error": self.last_error}

    @classmethod
    def from_json(cls, data: object) -> "Delivery | None":
        """None for anything that is not a delivery record (a damaged file is started afresh)."""
        if not isinstance(data, dict) or not isinstance(data.get("cert"), str):
            return None
        try:
            serial = int(data["serial"], 16) if isinstance(data.get("serial"), str) else None
            retry = datetime.fromisoformat(data["retry_at"]) if isinstance(data.get("retry_at"), str) else None
            failures = int(data.get("failures") or 0)
        except (ValueError, TypeError):
            return None
        return cls(data["cert"], serial, failures, retry, str(data.get("last_error") or ""))


def seen(records: Mapping[str, Delivery], consumers: Iterable[Consumer],
         serials: Mapping[str, int]) -> dict[str, Delivery]:
    """The records for the consumers there are now: a container seen for the first time (or asking
    for another certificate) has what is on disk now; records of containers gone are dropped."""
    out: dict[str, Delivery] = {}
    for c in consumers:
        known = records.get(c.container_id)
        out[c.container_id] = known if known is not None and known.cert_name == c.cert_name else Delivery(
            c.cert_name, serials.get(c.cert_name))
    return out


def due(records: Mapping[str, Delivery], consumers: Iterable[Consumer], serials: Mapping[str, int],
        now: datetime) -> list[tuple[Consumer, int]]:
    """The consumers to tell now, each with the serial it gets: the certificate on disk is not the one
    it has, and no failed attempt asks to wait. ``none`` consumers are never told (nothing to do)."""
    out = []
    for c in consumers:
        record, serial = records.get(c.container_id), serials.get(c.cert_name)
        if c.signal.how == "none" or record is None or serial is None or record.serial == serial:
            continue
        if record.retry_at is not None and now < record.retry_at:
            continue
        out.append((c, serial))
    return out


def delivered(record: Delivery, serial: int) -> Delivery:
    return Delivery(record.cert_name, serial)


def failed(record: Delivery, error: str, now: datetime, backoff: tuple[timedelta, ...]) -> Delivery:
    """One more failed attempt: retried after the back-off schedule's wait for that many failures."""
    failures = record.failures + 1
    wait = backoff_delay(failures, backoff) if backoff else timedelta(minutes=1)
    return replace(record, failures=failures, retry_at=now + wait, last_error=error)
