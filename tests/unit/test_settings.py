from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.core.errors import ConfigError
from sidecar.core.settings import (
    DEFAULT_CERTBOT_IMAGE,
    LETSENCRYPT_PRODUCTION,
    LETSENCRYPT_STAGING,
    Settings,
    load,
)


def test_defaults() -> None:
    s = load({})
    assert s == Settings()
    assert s.acme_server == LETSENCRYPT_PRODUCTION
    assert s.acme_email is None and s.acme_ca_bundle is None and s.sites_file is None
    assert (s.key_type, s.label_prefix, s.certbot_image) == ("ecdsa", "acme", DEFAULT_CERTBOT_IMAGE)
    assert s.certs_dir == Path("/etc/letsencrypt") and s.conf_dir == Path("/etc/nginx/conf.d")
    assert (s.log_format, s.log_level) == ("text", "INFO")
    assert s.nginx_label == "acme.nginx"


def test_blank_values_mean_default() -> None:
    assert load({"ACME_EMAIL": "  ", "ACME_SERVER": "", "LOG_LEVEL": " "}) == Settings()


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("production", LETSENCRYPT_PRODUCTION),
        ("letsencrypt", LETSENCRYPT_PRODUCTION),
        ("Staging", LETSENCRYPT_STAGING),
        ("letsencrypt-staging", LETSENCRYPT_STAGING),
        ("https://pebble:14000/dir", "https://pebble:14000/dir"),
        ("http://localhost:4001/directory", "http://localhost:4001/directory"),
    ],
    ids=["production", "letsencrypt", "staging-any-case", "letsencrypt-staging", "url", "http-url"],
)
def test_acme_server_aliases(raw: str, url: str) -> None:
    assert load({"ACME_SERVER": raw}).acme_server == url


def test_everything_set() -> None:
    s = load({
        "ACME_EMAIL": "ops@example.com",
        "ACME_CA_BUNDLE": "/certs/pebble.minica.pem",
        "ACME_KEY_TYPE": "RSA",
        "ACME_LABEL_PREFIX": "tls.",
        "NGINX_CONTAINER": "web-nginx-1",
        "SIDECAR_CONTAINER": "0123abcd",
        "CERTBOT_IMAGE": "registry.local:5000/certbot/certbot:v4.0.0",
        "SITES_FILE": "/config/sites.yml",
        "DEBOUNCE_SECONDS": "0",
        "CERTBOT_TIMEOUT": "3600",
        "LOG_FORMAT": "JSON",
        "LOG_LEVEL": "debug",
    })
    assert s.acme_email == "ops@example.com"
    assert s.acme_ca_bundle == Path("/certs/pebble.minica.pem")
    assert s.key_type == "rsa" and s.label_prefix == "tls" and s.nginx_label == "tls.nginx"
    assert (s.nginx_container, s.sidecar_container) == ("web-nginx-1", "0123abcd")
    assert s.certbot_image == "registry.local:5000/certbot/certbot:v4.0.0"
    assert s.sites_file == Path("/config/sites.yml")
    assert (s.debounce_seconds, s.certbot_timeout_seconds) == (0.0, 3600.0)
    assert (s.log_format, s.log_level) == ("json", "DEBUG")


BAD = [
    ("ACME_SERVER", "prod"),
    ("ACME_SERVER", "ftp://acme.test/dir"),
    ("ACME_SERVER", "https://acme.test/dir?x=1"),
    ("ACME_SERVER", "https://acme.test/dir\nX"),
    ("ACME_EMAIL", "not-an-email"),
    ("ACME_EMAIL", "ops@localhost"),
    ("ACME_EMAIL", "a b@example.com"),
    ("ACME_CA_BUNDLE", "relative/ca.pem"),
    ("ACME_KEY_TYPE", "ed25519"),
    ("ACME_LABEL_PREFIX", "Acme"),
    ("ACME_LABEL_PREFIX", "-acme"),
    ("ACME_LABEL_PREFIX", "a" * 64),
    ("NGINX_CONTAINER", "nginx; rm -rf /"),
    ("NGINX_CONTAINER", "/nginx"),
    ("SIDECAR_CONTAINER", "side car"),
    ("CERTBOT_IMAGE", "certbot image"),
    ("CERTBOT_IMAGE", "-certbot"),
    ("CERTS_DIR", "etc/letsencrypt"),
    ("WEBROOT_DIR", "./acme"),
    # rendered into nginx config: nothing nginx would read as syntax
    ("CERTS_DIR", "/etc/lets encrypt"),
    ("CERTS_DIR", "/etc/le;include /etc/passwd"),
    ("WEBROOT_DIR", "/var/www/acme}"),
    ("WEBROOT_DIR", "/var/www/$host"),
    ("WEBROOT_DIR", "/var/www/'acme'"),
    ("NGINX_CONF_DIR", "conf.d"),
    ("STATE_DIR", "~/state"),
    ("SITES_FILE", "sites.yml"),
    ("SITES_FILE", "/config/sites.yml\n/etc/passwd"),
    ("DEBOUNCE_SECONDS", "fast"),
    ("DEBOUNCE_SECONDS", "-1"),
    ("DEBOUNCE_SECONDS", "61"),
    ("DEBOUNCE_SECONDS", "nan"),
    ("CERTBOT_TIMEOUT", "5"),
    ("CERTBOT_TIMEOUT", "inf"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "trace"),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v[:20]!r}" for k, v in BAD])
def test_bad_value_raises_config_error_naming_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({key: value})
    message = str(info.value)
    assert message.startswith(f"{key}=")
    assert "\n" not in message  # the value is quoted with repr, never a raw newline


BAD_ENV = [
    ({"CERTBOT_CONCURRENCY": "0"}, "CERTBOT_CONCURRENCY"),
    ({"CERTBOT_CONCURRENCY": "many"}, "CERTBOT_CONCURRENCY"),
    ({"RELOAD_INTERVAL": "301"}, "RELOAD_INTERVAL"),
    ({"CERTBOT_RUNNER": "podman"}, "CERTBOT_RUNNER"),
    ({"CERTBOT_LAUNCHER": "fast"}, "CERTBOT_LAUNCHER"),
    ({"ACME_PROFILE": "Short Lived"}, "ACME_PROFILE"),
    ({"RATE_LIMITS": "none"}, "RATE_LIMITS"),
    ({"ARI": "yes"}, "ARI"),
    ({"PREFLIGHT_CHECK": "maybe"}, "PREFLIGHT_CHECK"),
    ({"ACME_EAB_KID": "kid-1"}, "ACME_EAB_HMAC_KEY"),
    ({"ACME_EAB_HMAC_KEY": "c2VjcmV0"}, "ACME_EAB_KID"),
    ({"ACME_EAB_KID": "kid-1", "ACME_EAB_HMAC_KEY": "not base64 secret!"}, "ACME_EAB_HMAC_KEY"),
]


@pytest.mark.parametrize(("env", "key"), BAD_ENV, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD_ENV)])
def test_bad_optional_feature_settings_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    message = str(info.value)
    assert key in message and "\n" not in message
    for secret in ("c2VjcmV0", "not base64 secret!"):
        assert secret not in message  # the EAB key is never echoed


def test_certbots_launcher_is_on_unless_turned_off() -> None:
    assert load({}).certbot_launcher is True
    assert load({"CERTBOT_LAUNCHER": "off"}).certbot_launcher is False


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_SERVER", "staging")
    assert load().acme_server == LETSENCRYPT_STAGING
