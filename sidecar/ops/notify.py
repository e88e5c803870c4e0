"""Alerts by e-mail and webhooks (any apprise URL), deduplicated, sent off the loop.

    events, snapshots ──> AlertPolicy (what deserves an alert; dedup state) ──> Alerter
                                                                               │ bounded queue
                                                             Dispatcher thread ┴─> apprise, one URL at a time

- ``AlertPolicy`` is pure apart from its own small state, which is kept in
  ``STATE_DIR/alerts.json`` so a restart does not repeat alerts:
  an alert on every issuance and renewal; on a failure once per site and kind
  of failure until the site succeeds again (not on every retry); and when a
  certificate has less than a sixth of its lifetime left (15 days of 90) without
  a successful renewal, then once more if it expires.
- The ``Dispatcher`` never blocks the loop: a full queue drops the alert (and
  logs it); alerts arriving within ``BATCH_SECONDS`` go out as one message.
  Failed deliveries are retried a few times.
- URLs carry passwords and tokens: only ``redact(url)`` (scheme, and the host
  for schemes where the host is a host) is ever logged. Each URL is also registered
  with ``core.redact``, and every alert's title and body pass through it (``combine``),
  so no secret (an EAB key quoted by an error, say) leaves in an alert.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import urlsplit

from sidecar.state import runlogs
from sidecar.core import redact as redaction
from sidecar.core.errors import ConfigError
from sidecar.core.events import Event, Kind, PassSnapshot
from sidecar.state.files import atomic_write

log = logging.getLogger("sidecar")

STATE_FILE = "alerts.json"
EXPIRY_FRACTION = 1 / 6
BATCH_SECONDS = 2.0
QUEUE_SIZE = 100
RETRY_DELAYS = (2.0, 10.0, 60.0)
LEVELS = ("info", "success", "warning", "failure")  # apprise's notification types, mildest first
# Schemes whose "host" part is a real host (not a token), so it is safe to log.
_HOST_SCHEMES = {
    "mailto", "mailtos", "json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys", "gotify", "gotifys",
    "matrix", "matrixs", "mmost", "mmosts", "rocket", "rockets", "apprise", "apprises", "http", "https",
}


def redact(url: str) -> str:
    """What may be logged of an alert URL: ``mailto://smtp.example.com``, ``tgram://…``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _HOST_SCHEMES:
        try:
            host, port = parts.hostname or "", parts.port
        except ValueError:
            host, port = "", None
        if host:
            return f"{scheme}://{host}{f':{port}' if port else ''}"
    return f"{scheme}://…"


@dataclass(frozen=True)
class Alert:
    kind: str    # issued, renewed, failed, expiring, expired, hook-failed
    site: str
    title: str
    body: str
    level: str   # one of LEVELS


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if isinstance(value, datetime) else "unknown"


@dataclass
class AlertPolicy:
    """Which events and snapshots deserve an alert. Remembers what was sent (see module doc)."""

    # site -> kinds of failure already alerted since its last success
    failed: dict[str, list[str]] = field(default_factory=dict)
    # site -> [notAfter of the certificate, stages alerted: "expiring", "expired"]
    expiry: dict[str, list[Any]] = field(default_factory=dict)
    expiry_fraction: float = EXPIRY_FRACTION
    dirty: bool = False

    # -- persistence -----------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "failed": self.failed, "expiry": self.expiry}

    @classmethod
    def from_json(cls, data: Any) -> "AlertPolicy":
        policy = cls()
        if not isinstance(data, dict):
            return policy
        failed, expiry = data.get("failed"), data.get("expiry")
        if isinstance(failed, dict):
            for site, kinds in failed.items():
                if isinstance(kinds, list):
                    policy.failed[str(site)] = [str(k) for k in kinds]
        if isinstance(expiry, dict):
            for site, entry in expiry.items():
                if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list):
                    policy.expiry[str(site)] = [str(entry[0]), [str(s) for s in entry[1]]]
        return policy

    # -- decisions -------------------------------------------------------------
    def on_event(self, event: Event) -> list[Alert]:
        d = event.details
        site = event.site
        if event.kind in (Kind.CERT_ISSUED, Kind.CERT_RENEWED):
            verb = "issued" if event.kind == Kind.CERT_ISSUED else "renewed"
            had = [k for k in self.failed.pop(site, None) or () if not k.startswith("hook ")]  # (consumers: apart)
            self.expiry.pop(site, None)
            self.dirty = True
            names = ", ".join(d.get("domains") or ()) or site
            body = (f"Site {site}: certificate {verb}"
                    f"{f' for {names}' if names != site else ''}, valid until {_when(d.get('not_after'))}; "
                    f"next renewal planned {_when(d.get('next_renewal'))}.")
            if had:
                body += f" It works again after failures ({', '.join(had)})."
            return [Alert(verb, site, f"Certificate {verb}: {site}", body, "success")]
        if event.kind == Kind.CERT_FAILED:
            kind = str(d.get("failure") or "unknown")
            seen = self.failed.setdefault(site, [])
            if kind in seen:
                return []
            seen.append(kind)
            self.dirty = True
            failures = d.get("failures")
            body = (f"Site {site}: certificate request failed ({kind}): {d.get('error') or event.message}\n"
                    f"Next attempt: {_when(d.get('next_attempt'))}"
                    f"{f' (failure {failures} in a row)' if failures else ''}.\n"
                    "Further failures of this kind are not alerted until the site gets a certificate.")
            return [Alert("failed", site, f"Certificate request failed: {site} ({kind})", body, "failure")]
        if event.kind in (Kind.CONSUMER_FAILED, Kind.CONSUMER_SIGNALLED):
            return self._consumer_alert(event)
        if event.kind == Kind.CONF_SET_ASIDE:
            file, aside = str(d.get("file") or "?"), str(d.get("aside") or "?")
            body = (f"nginx rejects the hand-written conf.d/{file}: {d.get('error') or event.message}\n"
                    f"It was renamed {aside} (its content untouched) so every other site keeps being updated. "
                    f"Fix it and rename it back, or edit {aside}: it is tried again when it changes.")
            return [Alert("set-aside", file, f"nginx config set aside: {file}", body, "warning")]
        if event.kind == Kind.CERT_EXPIRING:
            not_after = d.get("not_after")
            if isinstance(not_after, datetime):
                return self._expiry_alert(site, not_after, event.at, "", "")
        return []

    def _consumer_alert(self, event: Event) -> list[Alert]:
        """A consumer container not told of its new certificate: once per container until it works again."""
        d, site = event.details, event.site
        container = str(d.get("container") or "?")
        key = f"hook {container}"
        seen = self.failed.get(site, [])
        if event.kind == Kind.CONSUMER_SIGNALLED:
            if key in seen:
                seen.remove(key)
                self.dirty = True
            return []
        if key in seen:
            return []
        self.failed.setdefault(site, []).append(key)
        self.dirty = True
        body = (f"Site {site}: container {container} was not told of its new certificate "
                f"({d.get('signal') or '?'}): {d.get('error') or event.message}\n"
                f"Next attempt: {_when(d.get('next_attempt'))}. nginx and the other sites are not affected.\n"
                "Further failures of this container are not alerted until it is told.")
        return [Alert("hook-failed", site, f"Consumer not told of its new certificate: {container} ({site})", body,
                      "failure")]

    def on_snapshot(self, snap: PassSnapshot) -> list[Alert]:
        alerts: list[Alert] = []
        for s in snap.sites:
            if s.not_after is None or s.not_before is None:
                continue
            lifetime = s.not_after - s.not_before
            if s.not_after - snap.at <= lifetime * self.expiry_fraction:
                next_try = s.next_attempt or s.next_renewal
                alerts += self._expiry_alert(s.name, s.not_after, snap.at, s.last_error,
                                             _when(next_try) if next_try else "")
        return alerts

    def _expiry_alert(self, site: str, not_after: datetime, now: datetime, last_error: str,
                      next_try: str) -> list[Alert]:
        stage = "expired" if now >= not_after else "expiring"
        key = not_after.isoformat()
        entry = self.expiry.get(site)
        if entry is None or entry[0] != key:
            entry = self.expiry[site] = [key, []]
        if stage in entry[1]:
            return []
        entry[1].append(stage)
        self.dirty = True
        if stage == "expired":
            title = f"Certificate EXPIRED: {site}"
            body = f"Site {site}: the certificate expired at {_when(not_after)} and could not be renewed."
        else:
            left = not_after - now
            days = left.days + (1 if left % timedelta(days=1) else 0)
            title = f"Certificate expires in {days} day{'s' if days != 1 else ''}: {site}"
            body = (f"Site {site}: the certificate expires at {_when(not_after)} and has not been renewed "
                    "although renewal is due.")
        if last_error:
            body += f"\nLast error: {last_error}"
        if next_try:
            body += f"\nNext attempt: {next_try}."
        return [Alert(stage, site, title, body, "failure" if stage == "expired" else "warning")]


# -- delivery ------------------------------------------------------------------
class Target(Protocol):
    name: str  # redacted, safe to log

    def send(self, title: str, body: str, level: str) -> bool: ...


class AppriseTarget:
    """One apprise URL. apprise is imported only when alerts are configured."""

    def __init__(self, url: str, position: int = 1) -> None:
        try:
            import apprise
        except ImportError as exc:
            raise ConfigError("ALERT_URLS is set but the apprise package is not installed") from exc
        self._apprise = apprise
        self.name = redact(url)
        redaction.register_url(url)
        try:
            # read-only root file system: no cache on disk
            asset = apprise.AppriseAsset(storage_mode="memory")  # type: ignore[call-arg,unused-ignore]
        except TypeError:  # apprise before 1.9
            asset = apprise.AppriseAsset()
        self._client = apprise.Apprise(asset=asset)
        if not self._client.add(url):
            raise ConfigError(f"ALERT_URLS: entry {position} ({self.name}) is not a URL apprise understands")

    def send(self, title: str, body: str, level: str) -> bool:
        notify_type = getattr(self._apprise.NotifyType, level.upper(), self._apprise.NotifyType.INFO)
        return bool(self._client.notify(title=title, body=body, notify_type=notify_type,
                                        body_format=self._apprise.NotifyFormat.TEXT))


def combine(alerts: Sequence[Alert]) -> tuple[str, str, str]:
    """Title, body and level of one message carrying ``alerts``, secrets redacted."""
    level = max((a.level for a in alerts), key=LEVELS.index)
    if len(alerts) == 1:
        a = alerts[0]
        return redaction.redact(f"[nginx-acme-sidecar] {a.title}"), redaction.redact(a.body), level
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    body = "\n\n".join(f"* {a.title}\n{a.body}" for a in alerts)
    return (redaction.redact(f"[nginx-acme-sidecar] {len(alerts)} certificate events ({summary})"),
            redaction.redact(body), level)


class Dispatcher:
    """Sends alerts from its own thread; ``submit`` never blocks."""

    def __init__(self, targets: Sequence[Target], maxsize: int = QUEUE_SIZE, batch_seconds: float = BATCH_SECONDS,
                 retry_delays: Sequence[float] = RETRY_DELAYS, sleep: Callable[[float], bool] | None = None) -> None:
        self.targets = list(targets)
        self.queue: queue.Queue[Alert] = queue.Queue(maxsize=maxsize)
        self.batch_seconds = batch_seconds
        self.retry_delays = tuple(retry_delays)
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # returns True when stopping
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0
        self.undelivered = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, alert: Alert) -> bool:
        try:
            self.queue.put_nowait(alert)
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("alert queue full (%d waiting): dropped alert %r", self.queue.qsize(), alert.title)
            return False

    def _run(self) -> None:
        while not self._stop.is_set() or not self.queue.empty():
            try:
                first = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + (0 if self._stop.is_set() else self.batch_seconds)
            while len(batch) < 50:
                left = deadline - time.monotonic()
                try:
                    batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.deliver(batch)
            except Exception:  # noqa: BLE001 - the alert thread must survive a bug in one sender
                log.exception("sending alerts failed")

    def deliver(self, batch: Sequence[Alert]) -> None:
        title, body, level = combine(batch)
        for target in self.targets:
            ok = False
            for delay in (0.0, *self.retry_delays):
                if delay and self._sleep(delay):
                    break  # stopping: one try, no more waiting
                try:
                    ok = target.send(title, body, level)
                except Exception as exc:  # noqa: BLE001 - a sender bug is a failed delivery, not a crash
                    log.warning("alert to %s raised %s", target.name, type(exc).__name__)
                    ok = False
                if ok:
                    break
            if ok:
                self.sent += 1
                log.info("alert sent to %s: %s", target.name, title)
            else:
                self.undelivered += 1
                log.warning("alert NOT delivered to %s: %s (see the warnings above)", target.name, title)


class Alerter:
    """The ``Observer``: asks the policy, logs expiry warnings, hands alerts to the dispatcher."""

    def __init__(self, policy: AlertPolicy, dispatcher: Dispatcher | None, state_dir: Path | None = None) -> None:
        self.policy = policy
        self.dispatcher = dispatcher
        self.state_dir = state_dir
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, urls: Sequence[str], state_dir: Path) -> "Alerter":
        targets: list[Target] = [AppriseTarget(url, i) for i, url in enumerate(urls, 1)]
        if targets:
            logging.getLogger("apprise").setLevel(logging.WARNING)
        try:
            data = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        dispatcher = Dispatcher(targets) if targets else None
        if targets:
            log.info("alerts go to %s", ", ".join(t.name for t in targets))
        return cls(AlertPolicy.from_json(data), dispatcher, state_dir)

    def start(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.start()

    def stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()

    def event(self, event: Event) -> None:
        with self._lock:
            alerts = self.policy.on_event(event)
        self._handle(alerts)

    def snapshot(self, snap: PassSnapshot) -> None:
        with self._lock:
            alerts = self.policy.on_snapshot(snap)
        self._handle(alerts)

    def _handle(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            if alert.kind in ("expiring", "expired"):
                log.warning("%s", alert.body.replace("\n", "; "))
            if alert.kind == "failed" and self.state_dir is not None:
                latest = runlogs.latest(self.state_dir, alert.site)
                if latest is not None:
                    alert = replace(alert, body=f"{alert.body}\ncertbot output: {latest.path}")
            if self.dispatcher is not None:
                self.dispatcher.submit(alert)
        self._save()

    def _save(self) -> None:
        with self._lock:
            if not self.policy.dirty or self.state_dir is None:
                return
            self.policy.dirty = False
            text = json.dumps(self.policy.to_json(), indent=1, sort_keys=True) + "\n"
        try:
            atomic_write(self.state_dir / STATE_FILE, text)
        except OSError as exc:
            log.warning("cannot save the alert state: %s", exc)
