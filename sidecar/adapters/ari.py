"""ACME Renewal Information (RFC 9773): ask the CA when to renew.

``cert_id`` is pure. ``AriClient`` makes two kinds of unauthenticated GETs: the
directory (once, for its ``renewalInfo`` URL) and ``{renewalInfo}/{certID}`` per
certificate, re-asked as the CA's Retry-After says (clamped to between one
minute and 12 hours, so at least twice a day). Any failure means "no window":
the planner then falls back to renewing at one third of the lifetime left.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sidecar.core.model import Certificate

log = logging.getLogger(__name__)

MIN_RECHECK = timedelta(minutes=1)
MAX_RECHECK = timedelta(hours=12)
DEFAULT_RECHECK = timedelta(hours=6)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cert_id(aki: bytes, serial: int) -> str:
    """base64url(AKI keyIdentifier) "." base64url(DER INTEGER value of the serial)."""
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # keeps a leading 0x00
    return f"{_b64url(aki)}.{_b64url(serial_bytes)}"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    # when to ask again
    recheck_at: datetime


def parse_window(body: bytes, retry_after: str | None, now: datetime) -> Window:
    """Parse a renewalInfo response. Raises ValueError when it is not one."""
    data = json.loads(body)
    window = data["suggestedWindow"]
    start = datetime.fromisoformat(window["start"].replace("Z", "+00:00")).astimezone(timezone.utc)
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00")).astimezone(timezone.utc)
    if end < start:
        raise ValueError("suggestedWindow ends before it starts")
    recheck = DEFAULT_RECHECK
    if retry_after and retry_after.strip().isdigit():
        recheck = timedelta(seconds=int(retry_after.strip()))
    recheck = min(max(recheck, MIN_RECHECK), MAX_RECHECK)
    return Window(start, end, now + recheck)


class AriClient:
    def __init__(self, directory_url: str, ca_bundle: Path | None = None, timeout: float = 5.0) -> None:
        self.directory_url = directory_url
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        self._renewal_info: str | None = None
        self._directory_checked_at: datetime | None = None

    def _get(self, url: str) -> tuple[bytes, str | None]:
        request = urllib.request.Request(url, headers={"User-Agent": "nginx-acme-sidecar"})
        with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as resp:  # noqa: S310
            return resp.read(65536), resp.headers.get("Retry-After")

    def renewal_info_url(self, now: datetime) -> str | None:
        if self._renewal_info is not None:
            return self._renewal_info
        if self._directory_checked_at is not None and now - self._directory_checked_at < timedelta(hours=1):
            return None
        self._directory_checked_at = now
        try:
            body, _ = self._get(self.directory_url)
            url = json.loads(body).get("renewalInfo")
        except (OSError, ValueError, urllib.error.URLError) as exc:
            log.info("ARI: could not read the ACME directory (%s); renewing at 1/3 lifetime left meanwhile", exc)
            return None
        if not isinstance(url, str) or not url.startswith("http"):
            log.info("ARI: the CA offers no renewalInfo; renewing at 1/3 lifetime left")
            return None
        self._renewal_info = url.rstrip("/")
        return self._renewal_info

    def window(self, cert: Certificate, now: datetime) -> Window | None:
        if cert.authority_key_id is None:
            return None
        base = self.renewal_info_url(now)
        if base is None:
            return None
        url = f"{base}/{cert_id(cert.authority_key_id, cert.serial)}"
        try:
            body, retry_after = self._get(url)
            return parse_window(body, retry_after, now)
        except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError) as exc:
            log.info("ARI: no renewal window for %s (%s); using 1/3 lifetime left", cert.name, exc)
            return None
