"""Typed settings, read once from the environment.

Every variable is validated here; a bad value is a ``ConfigError`` naming the
variable, so the sidecar stops at start-up with one clear line instead of
misbehaving later.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Mapping

from sidecar.core import dns
from sidecar.core.errors import ConfigError
from sidecar.core.names import NGINX_SAFE_PATH, PROFILE_NAME
from sidecar.core.planner import BACKOFF

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
ACME_SERVER_ALIASES = {
    "production": LETSENCRYPT_PRODUCTION,
    "letsencrypt": LETSENCRYPT_PRODUCTION,
    "staging": LETSENCRYPT_STAGING,
    "letsencrypt-staging": LETSENCRYPT_STAGING,
}
DEFAULT_CERTBOT_IMAGE = "certbot/certbot:v5.8.0"

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Settings:
    acme_server: str = LETSENCRYPT_PRODUCTION
    acme_email: str | None = None
    acme_ca_bundle: Path | None = None
    key_type: str = "ecdsa"
    label_prefix: str = "acme"
    nginx_container: str | None = None
    certbot_image: str = DEFAULT_CERTBOT_IMAGE
    sidecar_container: str | None = None
    certs_dir: Path = Path("/etc/letsencrypt")
    webroot_dir: Path = Path("/var/www/acme")
    conf_dir: Path = Path("/etc/nginx/conf.d")
    state_dir: Path = Path("/var/lib/nginx-acme-sidecar")
    sites_file: Path | None = None
    debounce_seconds: float = 0.05
    certbot_timeout_seconds: float = 300.0
    log_format: str = "text"
    log_level: str = "INFO"
    # TLS profile for sites without their own (label acme.tls): "intermediate" or "modern".
    tls_profile: str = "intermediate"
    # Per-site snippet directories (<dir>/<site>/*.conf) included in each HTTPS server; None: off.
    snippets_dir: Path | None = Path("/etc/nginx/sidecar-snippets")
    # Directory whose site.conf.j2 / global.conf.j2 replace the shipped templates.
    templates_dir: Path | None = None
    # How many certbot runs may go at once (new certificates; renewals of
    # existing lineages share certbot's lock on the certificate directory and run one by one).
    certbot_concurrency: int = 10
    # "exec": one long-lived certbot container, each run a `docker exec` in it (fast);
    # "container": a new certbot container per run.
    certbot_runner: str = "exec"
    # With the exec runner: certbot imported once in its container, each run a fork of it
    # (sidecar/adapters/launcher.py); False: each run starts certbot afresh.
    certbot_launcher: bool = True
    # During a burst of new certificates, reload nginx at most this often (seconds).
    reload_interval: float = 15.0
    eab_kid: str | None = None
    eab_hmac_key: str | None = None
    acme_profile: str | None = None
    # Rate-limit budgets to respect: "letsencrypt", "letsencrypt-staging" or "off".
    rate_limits: str = "letsencrypt"
    ari: bool = True
    preflight: bool = True
    # A hand-written conf.d file nginx rejects: "set-aside" (renamed NAME.sidecar-broken, so every other
    # site keeps being updated) or "keep" (left in place: nothing reaches nginx until it is fixed)
    broken_conf: str = "set-aside"
    # Back-off after failed attempts of one certificate (the CA's integration guide: 1m, 10m, 100m, daily)
    backoff: tuple[timedelta, ...] = BACKOFF
    # Which containers may declare sites: all, project (the sidecar's Compose project), network (nginx's networks)
    sites_scope: str = "all"
    # Status/metrics HTTP server (healthz, metrics, status, plan, renew); port 0 turns it off.
    status_addr: str = "0.0.0.0"
    status_port: int = 9090
    # Apprise URLs for alerts (mailto://, json://, ...): secrets, never printed.
    alert_urls: tuple[str, ...] = ()
    # DNS-01 (core.dns): the default challenge and provider of sites without their own, the
    # directory of the credentials files (mounted read-only into the certbot container), the
    # propagation wait (None: each plugin's own) and its per-provider values, per-provider images.
    challenge: str = dns.HTTP_01
    dns_provider: str | None = None
    dns_credentials_dir: Path = Path("/run/secrets")
    dns_propagation_seconds: int | None = None
    dns_propagation: tuple[tuple[str, int], ...] = ()
    certbot_images: tuple[tuple[str, str], ...] = ()
    # Other tools' inputs, each opt-in: nginx-proxy's variables on containers (and its vhost.d files),
    # Traefik's router labels, and certificates another tool made, served until due (acme-companion's layout).
    compat_nginx_proxy: bool = False
    compat_traefik: bool = False
    vhost_dir: Path | None = Path("/etc/nginx/vhost.d")
    adopt_certs_dir: Path | None = None
    # HTTP/3 (QUIC on 443/udp, Alt-Svc advertised) for sites without their own acme.http3, and the
    # UDP port clients reach (the published one), written into Alt-Svc.
    http3: bool = False
    http3_port: int = 443
    # Docker Swarm (README "Docker Swarm"): "standalone" (Compose, one engine), "issuer" (reads Swarm
    # services, gets certificates, sends bundles to the agents) or "agent" (applies bundles to its node's nginx).
    role: str = "standalone"
    swarm_agent_service: str | None = None   # the agents' service name (issuer)
    challenge_proxy: str | None = None       # host:port every node's nginx forwards unknown challenges to
    bundle_key_file: Path = Path("/run/secrets/sidecar_bundle_key")
    agent_port: int = 9091
    swarm_poll_seconds: float = 5.0

    def propagation_for(self, provider: str) -> int | None:
        return dict(self.dns_propagation).get(provider, self.dns_propagation_seconds)

    def image_for(self, provider: str | None) -> str:
        """The certbot image that runs ``provider``'s plugin (CERTBOT_IMAGE_<PROVIDER>, else CERTBOT_IMAGE)."""
        return dict(self.certbot_images).get(provider or "", self.certbot_image)

    def __repr__(self) -> str:  # never print the EAB secret nor alert URLs (they carry passwords)
        return "Settings(" + ", ".join(
            f"{k}={'***' if k in ('eab_hmac_key', 'alert_urls') and v else v!r}" for k, v in self.__dict__.items()
        ) + ")"

    @property
    def nginx_label(self) -> str:
        """Label that marks the nginx container when no name is given."""
        return f"{self.label_prefix}.nginx"

    @property
    def managed_label(self) -> str:
        """Label put on every container the sidecar starts (certbot runs)."""
        return "nginx-acme-sidecar.role"


def _str(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "").strip()
    return value or None


def _float(env: Mapping[str, str], key: str, default: float, lo: float, hi: float) -> float:
    raw = _str(env, key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: not a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={raw!r}: must be between {lo:g} and {hi:g}")
    return value


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    raw = _str(env, key)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise ConfigError(f"{key}={raw[:40]!r}: a port number from 1 to 65535")
    return int(raw)


def _choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (_str(env, key) or default).lower()
    if raw not in choices:
        raise ConfigError(f"{key}={raw!r}: must be one of {', '.join(choices)}")
    return raw


def _nginx_path(env: Mapping[str, str], key: str, default: Path) -> Path:
    """A directory that ends up in the rendered nginx config: only characters nginx reads as a path."""
    raw = _str(env, key)
    if raw is None:
        return default
    if not NGINX_SAFE_PATH.fullmatch(raw):
        raise ConfigError(f"{key}={raw!r}: an absolute path of letters, digits and ._/- (it is written into the "
                          "nginx config)")
    return Path(raw)


def _nginx_dir_or_off(env: Mapping[str, str], key: str, default: Path | None) -> Path | None:
    """An nginx-safe directory (``_nginx_path``), ``off`` for none."""
    raw = _str(env, key)
    if raw is None or raw.lower() == "off":
        return default if raw is None else None
    return _nginx_path(env, key, Path(raw))


def _path(env: Mapping[str, str], key: str, default: Path | None) -> Path | None:
    raw = _str(env, key)
    if raw is None:
        return default
    if not raw.startswith("/") or "\n" in raw:
        raise ConfigError(f"{key}={raw!r}: must be an absolute path")
    return Path(raw)


_DURATION = re.compile(r"^(\d{1,7})(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _durations(env: Mapping[str, str], key: str, default: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
    """``1m,10m,100m,1d`` -> timedeltas; each step at least 1 s, the list non-decreasing."""
    raw = _str(env, key)
    if raw is None:
        return default
    steps = []
    for part in raw.split(","):
        match = _DURATION.fullmatch(part.strip())
        if not match or int(match.group(1)) == 0:
            raise ConfigError(f"{key}={raw!r}: use durations like 1m,10m,100m,1d")
        steps.append(timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}))
    if len(steps) > 10 or steps != sorted(steps):
        raise ConfigError(f"{key}={raw!r}: at most 10 steps, each at least as long as the one before")
    return tuple(steps)


def _acme_server(env: Mapping[str, str]) -> str:
    raw = _str(env, "ACME_SERVER") or "production"
    url = ACME_SERVER_ALIASES.get(raw.lower(), raw)
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?", url):
        raise ConfigError(
            f"ACME_SERVER={raw!r}: must be production, staging or an http(s) directory URL"
        )
    return url


def _status_addr(env: Mapping[str, str]) -> str:
    raw = _str(env, "STATUS_ADDR") or "0.0.0.0"
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(f"STATUS_ADDR={raw!r}: an IP address to listen on, like 0.0.0.0 or 127.0.0.1") from None


_URL_START = re.compile(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def split_alert_urls(raw: str) -> tuple[str, ...]:
    """``ALERT_URLS``: apprise URLs separated by commas or spaces.

    Only a separator followed by ``scheme://`` splits, so ``mailto://...?to=a@x,b@x`` stays whole.
    Errors name the entry by its position, never its text (it may hold a password).
    """
    urls = tuple(u.strip(" ,") for u in _URL_START.split(raw.strip()) if u.strip(" ,"))
    for i, url in enumerate(urls, 1):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", url):
            raise ConfigError(f"ALERT_URLS: entry {i} is not a URL like mailto://... or json://host/path")
    return urls


PROPAGATION_PREFIX = "DNS_PROPAGATION_SECONDS_"
IMAGE_PREFIX = "CERTBOT_IMAGE_"


def _per_provider(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``<prefix><PROVIDER>`` variables -> provider name -> value; an unknown provider is an error."""
    found = {}
    for key, raw in env.items():
        if not key.startswith(prefix) or not raw.strip():
            continue
        name = key[len(prefix):].lower()
        if name not in dns.PROVIDERS:
            raise ConfigError(f"{key}: {name!r} is not a DNS provider (known: {', '.join(dns.PROVIDERS)})")
        found[name] = raw.strip()
    return found


def _seconds(key: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and int(raw) <= 3600):
        raise ConfigError(f"{key}={raw[:40]!r}: seconds from 0 to 3600")
    return int(raw)


def _dns_provider(env: Mapping[str, str]) -> str | None:
    raw = _str(env, "ACME_DNS_PROVIDER")
    if raw is None:
        return None
    try:
        return dns.parse_provider(raw).spec
    except ValueError as exc:
        raise ConfigError(f"ACME_DNS_PROVIDER: {exc}") from None


def _images(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    images = _per_provider(env, IMAGE_PREFIX)
    for name, image in images.items():
        if not _IMAGE.fullmatch(image):
            raise ConfigError(f"{IMAGE_PREFIX}{name.upper()}={image!r}: not an image reference")
    return tuple(sorted(images.items()))


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raise ``ConfigError`` naming the bad variable."""
    env = os.environ if env is None else env

    email = _str(env, "ACME_EMAIL")
    if email is not None and not _EMAIL.fullmatch(email):
        raise ConfigError(f"ACME_EMAIL={email!r}: not an e-mail address")

    prefix = (_str(env, "ACME_LABEL_PREFIX") or "acme").rstrip(".")
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(f"ACME_LABEL_PREFIX={prefix!r}: use lower-case letters, digits, '.', '-', '_'")

    image = _str(env, "CERTBOT_IMAGE") or DEFAULT_CERTBOT_IMAGE
    if not _IMAGE.fullmatch(image):
        raise ConfigError(f"CERTBOT_IMAGE={image!r}: not an image reference")

    names = {}
    for key in ("NGINX_CONTAINER", "SIDECAR_CONTAINER"):
        value = _str(env, key)
        if value is not None and not _CONTAINER_NAME.fullmatch(value):
            raise ConfigError(f"{key}={value!r}: not a container name or id")
        names[key] = value

    eab_kid, eab_key = _str(env, "ACME_EAB_KID"), _str(env, "ACME_EAB_HMAC_KEY")
    if bool(eab_kid) != bool(eab_key):
        raise ConfigError("ACME_EAB_KID and ACME_EAB_HMAC_KEY must be set together")
    for key, value in (("ACME_EAB_KID", eab_kid), ("ACME_EAB_HMAC_KEY", eab_key)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_=-]{1,512}", value):
            raise ConfigError(f"{key}: must be base64url text")  # never echo a secret
    profile = _str(env, "ACME_PROFILE")
    if profile is not None and not PROFILE_NAME.fullmatch(profile):
        raise ConfigError(f"ACME_PROFILE={profile!r}: a profile name like classic, tlsserver or shortlived")
    server = _acme_server(env)
    limits = _choice(env, "RATE_LIMITS", "auto", ("auto", "letsencrypt", "letsencrypt-staging", "off"))
    if limits == "auto":
        limits = {LETSENCRYPT_PRODUCTION: "letsencrypt", LETSENCRYPT_STAGING: "letsencrypt-staging"}.get(server, "off")

    snippets = _str(env, "SNIPPETS_DIR")
    if snippets is not None and snippets.lower() != "off" and not NGINX_SAFE_PATH.fullmatch(snippets):
        raise ConfigError(f"SNIPPETS_DIR={snippets!r}: an absolute path of letters, digits and ._/- (or off)")
    templates_dir = _path(env, "TEMPLATES_DIR", None)
    if templates_dir is not None:
        from sidecar.core import render

        render.check_templates(str(templates_dir))

    defaults = Settings()
    return _swarm(env, Settings(
        acme_server=server,
        acme_email=email,
        acme_ca_bundle=_path(env, "ACME_CA_BUNDLE", None),
        key_type=_choice(env, "ACME_KEY_TYPE", "ecdsa", ("ecdsa", "rsa")),
        label_prefix=prefix,
        nginx_container=names["NGINX_CONTAINER"],
        certbot_image=image,
        sidecar_container=names["SIDECAR_CONTAINER"],
        certs_dir=_nginx_path(env, "CERTS_DIR", defaults.certs_dir),
        webroot_dir=_nginx_path(env, "WEBROOT_DIR", defaults.webroot_dir),
        conf_dir=_path(env, "NGINX_CONF_DIR", defaults.conf_dir) or defaults.conf_dir,
        state_dir=_path(env, "STATE_DIR", defaults.state_dir) or defaults.state_dir,
        sites_file=_path(env, "SITES_FILE", None),
        debounce_seconds=_float(env, "DEBOUNCE_SECONDS", defaults.debounce_seconds, 0.0, 60.0),
        certbot_timeout_seconds=_float(env, "CERTBOT_TIMEOUT", defaults.certbot_timeout_seconds, 10.0, 3600.0),
        log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
        log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        tls_profile=_choice(env, "TLS_PROFILE", "intermediate", ("intermediate", "modern")),
        snippets_dir=defaults.snippets_dir if snippets is None else None if snippets.lower() == "off" else Path(snippets),
        templates_dir=templates_dir,
        certbot_concurrency=int(_float(env, "CERTBOT_CONCURRENCY", defaults.certbot_concurrency, 1, 16)),
        certbot_runner=_choice(env, "CERTBOT_RUNNER", defaults.certbot_runner, ("exec", "container")),
        certbot_launcher=_choice(env, "CERTBOT_LAUNCHER", "on", ("on", "off")) == "on",
        reload_interval=_float(env, "RELOAD_INTERVAL", defaults.reload_interval, 0.0, 300.0),
        eab_kid=eab_kid,
        eab_hmac_key=eab_key,
        acme_profile=profile,
        rate_limits=limits,
        ari=_choice(env, "ARI", "on", ("on", "off")) == "on",
        preflight=_choice(env, "PREFLIGHT_CHECK", "on", ("on", "off")) == "on",
        broken_conf=_choice(env, "BROKEN_CONF", "set-aside", ("set-aside", "keep")),
        sites_scope=_choice(env, "SITES_SCOPE", "all", ("all", "project", "network")),
        backoff=_durations(env, "BACKOFF_SCHEDULE", defaults.backoff),
        status_addr=_status_addr(env),
        status_port=int(_float(env, "STATUS_PORT", defaults.status_port, 0, 65535)),
        alert_urls=split_alert_urls(_str(env, "ALERT_URLS") or ""),
        challenge=_choice(env, "ACME_CHALLENGE", dns.HTTP_01, dns.CHALLENGES),
        dns_provider=_dns_provider(env),
        dns_credentials_dir=_path(env, "DNS_CREDENTIALS_DIR", None) or defaults.dns_credentials_dir,
        dns_propagation_seconds=(_seconds("DNS_PROPAGATION_SECONDS", wait)
                                 if (wait := _str(env, "DNS_PROPAGATION_SECONDS")) is not None else None),
        dns_propagation=tuple(sorted((name, _seconds(PROPAGATION_PREFIX + name.upper(), raw))
                                     for name, raw in _per_provider(env, PROPAGATION_PREFIX).items())),
        certbot_images=_images(env),
        compat_nginx_proxy=_choice(env, "COMPAT_NGINX_PROXY", "off", ("on", "off")) == "on",
        compat_traefik=_choice(env, "COMPAT_TRAEFIK", "off", ("on", "off")) == "on",
        vhost_dir=_nginx_dir_or_off(env, "VHOST_DIR", defaults.vhost_dir),
        adopt_certs_dir=_nginx_dir_or_off(env, "ADOPT_CERTS_DIR", None),
        http3=_choice(env, "HTTP3", "off", ("on", "off")) == "on",
        http3_port=_port(env, "HTTP3_PORT", defaults.http3_port),
    ))


_HOST_PORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}:[0-9]{1,5}$")


def _swarm(env: Mapping[str, str], settings: Settings) -> Settings:
    """The Docker Swarm roles' variables (README "Docker Swarm")."""
    defaults = Settings()
    role = _choice(env, "SIDECAR_ROLE", "standalone", ("standalone", "issuer", "agent"))
    agents = _str(env, "SWARM_AGENT_SERVICE")
    if agents is not None and not _CONTAINER_NAME.fullmatch(agents):
        raise ConfigError(f"SWARM_AGENT_SERVICE={agents!r}: not a service name")
    if role == "issuer" and agents is None:
        raise ConfigError("SIDECAR_ROLE=issuer needs SWARM_AGENT_SERVICE (the agents' service, e.g. mystack_agent)")
    proxy = _str(env, "CHALLENGE_PROXY")
    if proxy is not None and not _HOST_PORT.fullmatch(proxy):
        raise ConfigError(f"CHALLENGE_PROXY={proxy!r}: host:port, e.g. issuer:9090")
    state_dir, certs_dir = settings.state_dir, settings.certs_dir
    if role == "issuer" and not state_dir.is_relative_to(certs_dir):
        raise ConfigError(f"SIDECAR_ROLE=issuer: STATE_DIR={state_dir} must be inside CERTS_DIR={certs_dir} "
                          "(the ledger travels with the certificates to every node)")
    return dataclasses.replace(
        settings, role=role, swarm_agent_service=agents, challenge_proxy=proxy,
        bundle_key_file=_path(env, "BUNDLE_KEY_FILE", None) or defaults.bundle_key_file,
        agent_port=int(_float(env, "AGENT_PORT", defaults.agent_port, 1, 65535)),
        swarm_poll_seconds=_float(env, "SWARM_POLL_SECONDS", defaults.swarm_poll_seconds, 0.5, 300.0))
