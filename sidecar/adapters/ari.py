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
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sidecar.core.model import Certificate
from sidecar.core.planner import ari_plausible

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


class AriWindows:
    """Renewal windows from the CA, asked once per certificate and again as its Retry-After says.

    Asking takes a round trip per certificate: with a thousand of them, the first passes plan
    with what is known and the rest is asked in the next passes (``backlog``), within
    ``seconds_per_pass`` each. A CA that does not answer is left alone for five minutes.
    Thread-safe: the loop and ``plan`` previews on the HTTP thread share it.
    """

    def __init__(self, client: AriClient | None, seconds_per_pass: float = 1.0) -> None:
        self.client = client
        self.seconds_per_pass = seconds_per_pass
        # lineage -> (serial, window or None, when to ask again)
        self._cache: dict[str, tuple[int, tuple[datetime, datetime] | None, datetime]] = {}
        self._down_until = datetime.min.replace(tzinfo=timezone.utc)
        self.backlog = False  # some certificates were not asked about yet (time budget)
        self._lock = threading.Lock()

    def windows(self, lineages: dict[str, Certificate], now: datetime,
                ask: bool = True) -> dict[str, tuple[datetime, datetime]]:
        """The known window per lineage; with ``ask``, ask the CA what is missing or stale."""
        if self.client is None:
            return {}
        out: dict[str, tuple[datetime, datetime]] = {}
        deadline = time.monotonic() + self.seconds_per_pass
        with self._lock:
            if ask:
                self.backlog = False
            for name, cert in sorted(lineages.items()):
                cached = self._cache.get(name)
                if ask and (cached is None or cached[0] != cert.serial or now >= cached[2]):
                    if time.monotonic() > deadline:
                        self.backlog = True
                    else:
                        cached = self._ask(name, cert, cached, now)
                if cached is not None and cached[0] == cert.serial and cached[1] is not None:
                    out[name] = cached[1]
        return out

    def _ask(self, name: str, cert: Certificate,
             cached: tuple[int, tuple[datetime, datetime] | None, datetime] | None,
             now: datetime) -> tuple[int, tuple[datetime, datetime] | None, datetime]:
        assert self.client is not None
        window = None if now < self._down_until else self.client.window(cert, now)
        if window is None:
            if cert.authority_key_id is not None:
                self._down_until = now + timedelta(minutes=5)  # the CA, not this certificate
            entry: tuple[int, tuple[datetime, datetime] | None, datetime] = (cert.serial, None, now + timedelta(hours=1))
        else:
            if cached is None or cached[1] != (window.start, window.end):
                plausible = ari_plausible(cert, (window.start, window.end))
                log.info("site %s: the CA suggests renewing between %s and %s UTC (ARI)%s", name,
                         f"{window.start:%Y-%m-%d %H:%M:%S}", f"{window.end:%Y-%m-%d %H:%M:%S}",
                         "" if plausible else "; outside the certificate's validity, so ignored")
            entry = (cert.serial, (window.start, window.end), window.recheck_at)
        self._cache[name] = entry
        return entry

    def next_recheck(self, now: datetime) -> datetime | None:
        """When a pass is needed to ask again (in a second while there is a backlog)."""
        with self._lock:
            times = [c[2] for c in self._cache.values()]
            if self.backlog:
                times.append(now + timedelta(seconds=1))
        return min(times) if times else None
