"""Per-site options (labels or sites-file keys) -> a validated ``SiteOptions``. Pure.

Every value is matched against a strict pattern and bounded here, before it can
reach nginx config; a bad value raises ``OptionError`` naming the option, and the
caller turns it into a one-line ``Problem`` naming the container and label or the
file and entry.

=================  ==============================================  =====================
key                value                                           default
=================  ==============================================  =====================
``tls``            ``intermediate`` or ``modern``                  ``TLS_PROFILE``
``hsts``           ``off``, or max-age seconds (0 .. 4 years),     ``63072000`` (2 years)
                   optionally ``; includeSubDomains`` ``; preload``
``max_body_size``  nginx size: digits with an optional k/m/g       nginx's ``1m``
                   (``0`` = no limit), at most 64g
``redirect``       ``www-to-apex`` or ``apex-to-www`` (both        none
                   names must be among the site's domains)
``websocket``      ``on`` or ``off``                               ``on``
``key_type``       ``ecdsa`` or ``rsa``                            ``ACME_KEY_TYPE``
``profile``        ACME profile name ``[a-z0-9][a-z0-9-]{0,31}``   ``ACME_PROFILE``
``header.NAME``    an extra response header (at most 20)           none
``challenge``      ``http-01`` or ``dns-01``                       ``ACME_CHALLENGE``
``dns_provider``   a certbot DNS plugin (``core.dns``), e.g.       ``ACME_DNS_PROVIDER``
                   ``rfc2136`` or ``cloudflare:work``
``http3``          ``on`` or ``off``: HTTP/3 over QUIC on 443/udp   ``HTTP3``
                   with ``Alt-Svc`` advertised
=================  ==============================================  =====================

Wildcard names (``*.example.com``) are accepted only for a site validated over DNS-01; a
DNS-01 site needs a provider (its own or the default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from sidecar.core import dns
from sidecar.core.domains import is_wildcard, wildcard_error
from sidecar.core.model import Hsts, SiteOptions
from sidecar.core.names import PROFILE_NAME

OPTION_KEYS = ("tls", "hsts", "max_body_size", "redirect", "websocket", "key_type", "profile", "challenge",
               "dns_provider", "http3")
HEADER_PREFIX = "header."
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1024
TWO_YEARS = 63072000
HSTS_MAX_AGE_LIMIT = 2 * TWO_YEARS
# hstspreload.org's submission requirements.
PRELOAD_MIN_AGE = 31536000
MAX_BODY_BYTES = 64 * 1024**3

TLS_PROFILES = ("intermediate", "modern")
REDIRECTS = ("www-to-apex", "apex-to-www")
KEY_TYPES = ("ecdsa", "rsa")

_SIZE = re.compile(r"([0-9]{1,12})([kmg]?)")
# An RFC 9110 token, minus "$" and "'" (and starting with a letter or digit) so the
# name can never be read by nginx as a variable or a quote.
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#%&*+.^_`|~-]{0,63}")
# Printable ASCII; see _HEADER_VALUE_FORBIDDEN for what is refused.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
# Inside nginx's double quotes only these matter: '"' ends the string, '\\' escapes, '$' interpolates.
# Quotes, ';' and braces are literal there, so a Content-Security-Policy fits in a label.
_HEADER_VALUE_FORBIDDEN = set("\"\\$")
# Set by the sidecar itself or meaningless on a proxied response.
_RESERVED_HEADERS = {
    "strict-transport-security": "use the hsts option",
    "connection": "a hop-by-hop header",
    "keep-alive": "a hop-by-hop header",
    "transfer-encoding": "set by nginx",
    "content-length": "set by nginx",
    "upgrade": "a hop-by-hop header",
    "te": "a hop-by-hop header",
    "trailer": "a hop-by-hop header",
}


@dataclass(frozen=True)
class Defaults:
    """The sidecar's defaults that decide whether a site's options fit together (the environment's
    ``ACME_CHALLENGE`` and ``ACME_DNS_PROVIDER``)."""

    challenge: str = dns.HTTP_01
    dns_provider: str | None = None


class OptionError(ValueError):
    """A bad option value; ``key`` is the option (``hsts``, ``header.X-Frame-Options``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _show(raw: object) -> str:
    return repr(str(raw)[:60])


def _text(key: str, raw: object) -> str:
    """Label values are strings; YAML may give ints. Anything else is an error."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise OptionError(key, f"{_show(raw)} must be a string")
    return str(raw).strip()


def _choice(key: str, raw: object, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower() if isinstance(raw, str) else None
    if value not in choices:
        raise OptionError(key, f"{_show(raw)} must be {' or '.join(choices)}")
    return str(value)


def parse_tls(raw: object) -> str:
    return _choice("tls", raw, TLS_PROFILES)


def parse_hsts(raw: object) -> Hsts | None:
    """``off`` | ``on`` | ``SECONDS[; includeSubDomains][; preload]`` (also ``max-age=SECONDS``)."""
    if isinstance(raw, bool):  # YAML 1.1 reads a bare off/on as a boolean
        return Hsts() if raw else None
    text = _text("hsts", raw)
    if len(text) > 120:
        raise OptionError("hsts", "longer than 120 characters")
    if text.lower() == "off":
        return None
    if text.lower() == "on":
        return Hsts()
    parts = [p.strip() for p in text.split(";")]
    age = parts[0]
    if age.lower().startswith("max-age="):
        age = age[len("max-age="):].strip()
    if not (age.isascii() and age.isdigit()) or len(age) > 10:
        raise OptionError("hsts", f"{_show(raw)}: use off, or max-age in seconds like '63072000; includeSubDomains'")
    max_age = int(age)
    if max_age > HSTS_MAX_AGE_LIMIT:
        raise OptionError("hsts", f"max-age {max_age} is more than {HSTS_MAX_AGE_LIMIT} seconds (4 years)")
    flags: set[str] = set()
    for part in parts[1:]:
        flag = part.lower()
        if flag not in ("includesubdomains", "preload"):
            raise OptionError("hsts", f"unknown flag {part[:40]!r} (known: includeSubDomains, preload)")
        if flag in flags:
            raise OptionError("hsts", f"flag {part} given twice")
        flags.add(flag)
    hsts = Hsts(max_age=max_age, include_subdomains="includesubdomains" in flags, preload="preload" in flags)
    if hsts.preload and (not hsts.include_subdomains or max_age < PRELOAD_MIN_AGE):
        raise OptionError(
            "hsts", f"preload needs includeSubDomains and a max-age of at least {PRELOAD_MIN_AGE} (one year)"
        )
    return hsts


def parse_max_body_size(raw: object) -> str:
    text = _text("max_body_size", raw).lower()
    match = _SIZE.fullmatch(text)
    if not match:
        raise OptionError("max_body_size", f"{_show(raw)}: use an nginx size like 512k, 10m or 1g (0 = no limit)")
    number, unit = int(match.group(1)), match.group(2)
    if number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit] > MAX_BODY_BYTES:
        raise OptionError("max_body_size", f"{_show(raw)} is more than 64g")
    return f"{number}{unit}"


def redirect_pairs(domains: Iterable[str], redirect: str | None) -> list[tuple[str, str]]:
    """(from, to) for every apex/www pair among ``domains`` that ``redirect`` joins."""
    if redirect is None:
        return []
    names = list(domains)
    pairs = [(d, "www." + d) for d in names if "www." + d in names]
    return pairs if redirect == "apex-to-www" else [(www, apex) for apex, www in pairs]


def parse_redirect(raw: object, domains: tuple[str, ...]) -> str:
    value = _choice("redirect", raw, REDIRECTS)
    if not redirect_pairs(domains, value):
        raise OptionError(
            "redirect", f"{value} needs both a name and its www. name among the domains ({', '.join(domains)[:120]})"
        )
    return value


def _on_off(key: str, raw: object) -> bool:
    if isinstance(raw, bool):  # YAML 1.1 reads a bare on/off as a boolean
        return raw
    value = _text(key, raw).lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise OptionError(key, f"{_show(raw)} must be on or off")


def parse_websocket(raw: object) -> bool:
    return _on_off("websocket", raw)


def parse_http3(raw: object) -> bool:
    return _on_off("http3", raw)


def parse_key_type(raw: object) -> str:
    return _choice("key_type", raw, KEY_TYPES)


def parse_profile(raw: object) -> str:
    value = _text("profile", raw)
    if not PROFILE_NAME.fullmatch(value):
        raise OptionError("profile", f"{_show(raw)}: an ACME profile name like classic, tlsserver or shortlived")
    return value


def parse_challenge(raw: object) -> str:
    try:
        return dns.parse_challenge(raw)
    except ValueError as exc:
        raise OptionError("challenge", str(exc)) from None


def parse_dns_provider(raw: object) -> str:
    try:
        return dns.parse_provider(raw).spec
    except ValueError as exc:
        raise OptionError("dns_provider", str(exc)) from None


def _check_challenge(domains: tuple[str, ...], challenge: str | None, provider: str | None,
                     defaults: Defaults) -> None:
    """Wildcards only over DNS-01, and DNS-01 only with a provider."""
    effective = challenge or defaults.challenge
    if effective == dns.HTTP_01:
        wild = next((d for d in domains if is_wildcard(d)), None)
        if wild is not None:
            raise OptionError("domains", f"{wildcard_error(wild)} (use the dns-01 challenge)")
        if provider is not None:
            raise OptionError("dns_provider", "is only used with the dns-01 challenge")
    elif provider is None and defaults.dns_provider is None:
        raise OptionError("challenge", "dns-01 needs a DNS provider: set dns_provider (or ACME_DNS_PROVIDER)")


def parse_header(name: object, raw: object) -> tuple[str, str]:
    shown = str(name)[:64]
    key = HEADER_PREFIX + shown
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise OptionError(key, f"header name {shown!r} must be a token of letters, digits and -_.!#%&*+^|~`")
    reserved = _RESERVED_HEADERS.get(name.lower())
    if reserved:
        raise OptionError(key, f"header {name} cannot be set here ({reserved})")
    value = _text(key, raw)
    if not value:
        raise OptionError(key, "empty value")
    if len(value) > MAX_HEADER_VALUE:
        raise OptionError(key, f"value longer than {MAX_HEADER_VALUE} characters")
    bad = sorted(set(value) & _HEADER_VALUE_FORBIDDEN)
    if not _HEADER_VALUE.fullmatch(value) or bad:
        what = f"{bad[0]!r}" if bad else "a non-printable or non-ASCII character"
        raise OptionError(key, f"value contains {what} (allowed: printable ASCII without double quotes, \\ and $)")
    return name, value


def build(
    values: Mapping[str, object],
    headers: Iterable[tuple[object, object]],
    domains: tuple[str, ...],
    origin: Callable[[str], str],
    defaults: Defaults = Defaults(),
) -> SiteOptions:
    """Validate every given option; ``origin(key)`` says where a key was set (for the file header).

    ``values`` holds only keys that were given (a subset of ``OPTION_KEYS``).
    Raise ``OptionError`` on the first bad value (``domains`` for a wildcard the challenge cannot validate).
    """
    unknown = sorted(set(values) - set(OPTION_KEYS))
    if unknown:
        raise OptionError(unknown[0], f"unknown option (known: {', '.join(OPTION_KEYS)})")

    tls = parse_tls(values["tls"]) if "tls" in values else None
    hsts = parse_hsts(values["hsts"]) if "hsts" in values else Hsts()
    max_body_size = parse_max_body_size(values["max_body_size"]) if "max_body_size" in values else None
    redirect = parse_redirect(values["redirect"], domains) if "redirect" in values else None
    websocket = parse_websocket(values["websocket"]) if "websocket" in values else True
    key_type = parse_key_type(values["key_type"]) if "key_type" in values else None
    acme_profile = parse_profile(values["profile"]) if "profile" in values else None
    challenge = parse_challenge(values["challenge"]) if "challenge" in values else None
    dns_provider = parse_dns_provider(values["dns_provider"]) if "dns_provider" in values else None
    http3 = parse_http3(values["http3"]) if "http3" in values else None
    _check_challenge(domains, challenge, dns_provider, defaults)
    origins = [(k, origin(k)) for k in OPTION_KEYS if k in values]

    parsed: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, raw in headers:
        header = parse_header(name, raw)
        if header[0].lower() in seen:
            raise OptionError(HEADER_PREFIX + header[0], "header given twice")
        seen.add(header[0].lower())
        parsed.append(header)
        if len(parsed) > MAX_HEADERS:
            raise OptionError(HEADER_PREFIX + header[0], f"more than {MAX_HEADERS} extra headers")
        origins.append((HEADER_PREFIX + header[0], origin(HEADER_PREFIX + header[0])))
    return SiteOptions(
        tls=tls,
        hsts=hsts,
        max_body_size=max_body_size,
        redirect=redirect,
        websocket=websocket,
        key_type=key_type,
        acme_profile=acme_profile,
        challenge=challenge,
        dns_provider=dns_provider,
        http3=http3,
        headers=tuple(parsed),
        origins=tuple(origins),
    )
