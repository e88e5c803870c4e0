"""What must survive a restart: failed attempts (back-off, CA retry times) and the
history of issued certificates, kept as one JSON file in ``STATE_DIR``.

Written atomically; a corrupt file is moved aside and reported, never fatal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sidecar.core.names import iso as _iso
from sidecar.core.planner import Attempt
from sidecar.core.redact import redact
from sidecar.core.schedule import Usage
from sidecar.state.files import atomic_write

log = logging.getLogger(__name__)

HISTORY_KEEP = timedelta(days=8)  # longer than any CA rate-limit window


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass
class Ledger:
    path: Path
    attempts: dict[str, Attempt] = field(default_factory=dict)
    # lineage name -> list of (issued at, names) for every certificate obtained
    issued: list[tuple[datetime, str, tuple[str, ...]]] = field(default_factory=list)
    # every order sent to the CA (certbot run): (at, lineage name)
    orders: list[tuple[datetime, str]] = field(default_factory=list)
    # failed validations: (at, identifier)
    failed_validations: list[tuple[datetime, str]] = field(default_factory=list)
    # Held by every reader and writer: certbot threads record while the loop plans.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def usage(self, account_paused_until: datetime | None = None) -> Usage:
        """A frozen copy of what counts against the CA's rate limits."""
        with self.lock:
            return Usage(tuple(self.issued), tuple(self.orders), tuple(self.failed_validations),
                         account_paused_until)

    def attempts_now(self, keep: set[str], forget: bool = True) -> dict[str, Attempt]:
        """The attempts of the sites still wanted (with ``forget``, the others are dropped)."""
        with self.lock:
            if forget:
                self.forget(keep)
            return {name: a for name, a in self.attempts.items() if name in keep}

    @classmethod
    def load(cls, path: Path) -> "Ledger":
        ledger = cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for name, a in (data.get("attempts") or {}).items():
                ledger.attempts[name] = Attempt(
                    failures=int(a.get("failures", 0)),
                    last_failure=_dt(a.get("last_failure")),
                    last_error=str(a.get("last_error", "")),
                    domains=tuple(a.get("domains") or ()),
                    not_before=_dt(a.get("not_before")),
                )
            for item in data.get("issued") or []:
                at = _dt(item.get("at"))
                if at is not None:
                    ledger.issued.append((at, str(item.get("name", "")), tuple(item.get("domains") or ())))
            for item in data.get("orders") or []:
                at = _dt(item.get("at"))
                if at is not None:
                    ledger.orders.append((at, str(item.get("name", ""))))
            for item in data.get("failed_validations") or []:
                at = _dt(item.get("at"))
                if at is not None:
                    ledger.failed_validations.append((at, str(item.get("domain", ""))))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            aside = path.with_suffix(".corrupt")
            try:
                os.replace(path, aside)
            except OSError:
                pass
            log.error("state file %s is unreadable (%s); moved to %s and starting fresh", path, exc, aside)
            ledger = cls(path)
        return ledger

    def save(self) -> None:
        data = {
            "version": 1,
            "attempts": {
                name: {
                    "failures": a.failures,
                    "last_failure": _iso(a.last_failure),
                    "last_error": a.last_error,
                    "domains": list(a.domains),
                    "not_before": _iso(a.not_before),
                }
                for name, a in sorted(self.attempts.items())
            },
            "issued": [
                {"at": at.isoformat(), "name": name, "domains": list(domains)}
                for at, name, domains in self.issued
            ],
            "orders": [{"at": at.isoformat(), "name": name} for at, name in self.orders],
            "failed_validations": [{"at": at.isoformat(), "domain": d} for at, d in self.failed_validations],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def record_success(self, name: str, domains: tuple[str, ...], now: datetime, issued: bool) -> None:
        self.attempts.pop(name, None)
        if issued:
            self.issued.append((now, name, domains))
        self._prune(now)

    def record_order(self, name: str, domains: tuple[str, ...], now: datetime) -> None:
        self.orders.append((now, name))
        self._prune(now)

    def unrecord_order(self, name: str, at: datetime) -> None:
        """That run never reached the CA: it used none of its budgets."""
        try:
            self.orders.remove((at, name))
        except ValueError:
            pass

    def _prune(self, now: datetime) -> None:
        self.issued = [i for i in self.issued if now - i[0] < HISTORY_KEEP]
        self.orders = [o for o in self.orders if now - o[0] < HISTORY_KEEP]
        self.failed_validations = [f for f in self.failed_validations if now - f[0] < HISTORY_KEEP]

    def record_failure(
        self, name: str, domains: tuple[str, ...], now: datetime, error: str, not_before: datetime | None,
        validation: bool = False,
    ) -> Attempt:
        if validation:
            self.failed_validations.extend((now, d) for d in domains)
        previous = self.attempts.get(name)
        failures = (previous.failures if previous and set(previous.domains) == set(domains) else 0) + 1
        attempt = Attempt(failures=failures, last_failure=now, last_error=redact(error), domains=domains,
                          not_before=not_before)
        self.attempts[name] = attempt
        return attempt

    def clear_backoff(self, name: str) -> bool:
        """The operator asked to retry now: our own back-off is lifted (a CA's retry-after stays)."""
        attempt = self.attempts.get(name)
        if attempt is None or attempt.last_failure is None:
            return False
        self.attempts[name] = dataclasses.replace(attempt, last_failure=None)
        return True

    def forget(self, keep: set[str]) -> None:
        """Drop attempts for lineages no site wants any more."""
        for name in list(self.attempts):
            if name not in keep:
                del self.attempts[name]
