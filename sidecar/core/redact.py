"""Secrets out of everything the sidecar says: logs, events, status, alerts, the ledger. Pure, thread-safe.

A process-wide registry of secret values, filled at start-up from the settings (the EAB
HMAC key, alert URLs) and at run time by whatever reads a secret file::

    register(value)      a secret; empty and very short values (< MIN_LENGTH) are ignored
    register_url(url)    an alert URL: the whole URL, its password, token-like parts
    redact(text)         every registered value -> MARKER; and, registered or not, the value
                         after --eab-hmac-key / --eab-kid and the password of scheme://user:PASSWORD@
    redact_doc(doc)      the same through dicts, lists and tuples (documents, event details)

The boundaries call ``redact``: the log handler's filter, ``Reporter.emit``, the ledger's
``record_failure``, the status server's JSON, the alert text, the Docker adapter's errors.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MARKER = "[redacted]"
MIN_LENGTH = 4

# --eab-hmac-key VALUE, --eab-hmac-key=VALUE, and as list items: '--eab-hmac-key', 'VALUE'
_FLAG_VALUE = re.compile(r"(--eab-(?:hmac-key|kid)(?:=|[\s'\",]+))" f"(?!{re.escape(MARKER)})" r"[^\s'\",\])]+")
# scheme://user:PASSWORD@ (user may be empty)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(@)")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<rest>\S*)$")
_USERINFO = re.compile(r"[^\s/:@]*:([^\s/@]+)@")
# query parameters that carry a secret by their name (apprise: ?pass=, ?token=, ?apikey=, ...)
_SECRET_PARAM = re.compile(r"(?:^|[?&;])[^=&;]*(?:pass|pwd|token|secret|key)[^=&;]*=([^&;#]+)", re.I)
# a host or path part that looks like a token (tgram://123456:ABC-def.../chat, discord://id/token):
# long, letters and digits both, no dots (so never a host name)
_TOKEN = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_:~-]{16,}")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def register(value: str | None) -> None:
    """Add a secret; from now on ``redact`` replaces it wherever it appears."""
    global _secrets, _pattern
    if not value or len(value.strip()) < MIN_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets = _secrets | {value}
        # the longest first, so a secret containing another is replaced whole
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def register_url(url: str) -> None:
    """An alert URL: the URL itself, its password (as written and percent-decoded), the values of
    query parameters named like pass/token/key/secret, and its token-like host and path parts."""
    register(url)
    match = _URL.match(url.strip())
    if match is None:
        return
    rest = match.group("rest")
    userinfo = _USERINFO.match(rest)
    if userinfo is not None:
        register(userinfo.group(1))
        register(_unquote(userinfo.group(1)))
    _, _, query = rest.partition("?")
    for value in _SECRET_PARAM.findall("?" + query if query else ""):
        register(value)
        register(_unquote(value))
    for part in re.split(r"[/@]", re.split(r"[?#]", rest, maxsplit=1)[0]):
        if _TOKEN.fullmatch(part):
            register(part)


def clear() -> None:
    """Forget every registered secret (for tests)."""
    global _secrets, _pattern
    with _lock:
        _secrets, _pattern = frozenset(), None


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``MARKER``."""
    pattern = _pattern  # one read: a concurrent ``register`` swaps in a new pattern whole
    if pattern is not None:
        text = pattern.sub(MARKER, text)
    if "--eab-" in text:  # (each regex only where it can match: a status of ten thousand sites has
        text = _FLAG_VALUE.sub(lambda m: m.group(1) + MARKER, text)  # hundreds of thousands of strings)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + MARKER + m.group(2), text)
    return text


def redact_doc(value: Any) -> Any:
    """A JSON-like document with ``redact`` applied to every string in it (keys too); other
    values (numbers, times, ...) are kept as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_doc(k): redact_doc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_doc(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_doc(v) for v in value)
    return value


def _unquote(text: str) -> str:
    """Percent-decoding (``p%40ss`` -> ``p@ss``) without urllib, which the core does not import."""
    if "%" not in text:
        return text
    raw = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw
