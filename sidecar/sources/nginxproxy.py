"""nginx-proxy and acme-companion variables on a container -> the labels they stand for. Pure.

With ``COMPAT_NGINX_PROXY=on`` a container without ``acme.domains`` whose environment has
``ACME_HOST``/``LETSENCRYPT_HOST`` or ``VIRTUAL_HOST`` is read as if it carried these labels
(``acme.*`` labels it does carry win), so the labels' own checks and messages apply:

======================  ====================  ============================================
variable                label                 how
======================  ====================  ============================================
``ACME_HOST``, else     ``acme.domains``      the names the certificate holds
``LETSENCRYPT_HOST``,
else ``VIRTUAL_HOST``
``VIRTUAL_PORT``        ``acme.port``         as is
``VIRTUAL_PROTO``       ``acme.scheme``       ``http``/``https`` (others are refused)
``HSTS``                ``acme.hsts``         ``max-age=N; ...`` -> ``N; ...``, ``off``
``ACME_KEYSIZE``        ``acme.key_type``     ``2048``..``4096`` -> ``rsa``, ``ec-*`` -> ``ecdsa``
``ACME_CERT_PROFILE``   ``acme.profile``      as is
======================  ====================  ============================================

``VIRTUAL_PATH`` other than ``/`` and ``VIRTUAL_HOST_MULTIPORTS`` leave the container out (one
error); variables with no equivalent are named in one warning per container (``untranslated``).
``vhost_includes`` picks the container's ``vhost.d`` files, as nginx-proxy does.
"""

from __future__ import annotations

import re
from typing import Collection, Mapping

from sidecar.core.model import ContainerInfo, Problem
from sidecar.sources.translation import Translation

SOURCE = "nginx-proxy variables"
HOSTS = ("ACME_HOST", "LETSENCRYPT_HOST")
KEYSIZES = {"2048": "rsa", "3072": "rsa", "4096": "rsa", "ec-256": "ecdsa", "ec-384": "ecdsa"}
HTTPS_METHODS = ("redirect", "noredirect", "nohttp", "nohttps")
_ONE_CA = "one CA for every site: the sidecar's ACME_SERVER"
_ONE_ACCOUNT = "one ACME account: the sidecar's"
# variable -> why it has no equivalent (named, never its value: some hold secrets)
IGNORED = {
    "ACME_CA_URI": _ONE_CA,
    "LETSENCRYPT_TEST": _ONE_CA,
    "ACME_CHALLENGE": "DNS-01 is chosen with the acme.challenge and acme.dns_provider labels",
    "ACMESH_DNS_API_CONFIG": "DNS-01 is chosen with the acme.challenge and acme.dns_provider labels",
    "ACME_EAB_KID": _ONE_ACCOUNT,
    "ACME_EAB_HMAC_KEY": _ONE_ACCOUNT,
    "ZEROSSL_API_KEY": _ONE_ACCOUNT,
    "ACME_OCSP": "no OCSP Must-Staple",
    "ACME_PRE_HOOK": "no acme.sh hooks",
    "ACME_POST_HOOK": "no acme.sh hooks",
    "ACME_PREFERRED_CHAIN": "the CA's default chain",
    "ACME_RENEW_AFTER": "renewal follows the CA (ARI), else a third of the lifetime left",
    "ACME_RENEW_PRIVATE_KEYS": "every certificate gets a new key",
    "ACME_RESTART_CONTAINER": "containers are not restarted on renewal",
    "LETSENCRYPT_RESTART_CONTAINER": "containers are not restarted on renewal",
    "ACME_SINGLE_DOMAIN_CERTS": "one certificate per site",
    "LETSENCRYPT_SINGLE_DOMAIN_CERTS": "one certificate per site",
    "VIRTUAL_DEST": "requests keep their path",
    "NETWORK_ACCESS": "no access rules",
    "SSL_POLICY": "TLS follows TLS_PROFILE or the acme.tls label",
}
EMAILS = ("ACME_EMAIL", "LETSENCRYPT_EMAIL")
MAPPED = (*HOSTS, "VIRTUAL_HOST", "VIRTUAL_PORT", "VIRTUAL_PROTO", "VIRTUAL_PATH", "VIRTUAL_HOST_MULTIPORTS",
          "HTTPS_METHOD", "HSTS", "ACME_KEYSIZE", "LETSENCRYPT_KEYSIZE", "ACME_CERT_PROFILE", "CERT_NAME", *EMAILS)
# The only variables read (and kept) from a container's environment.
ENV_KEYS = frozenset((*MAPPED, *IGNORED))


def _names(raw: str) -> list[str]:
    return [n.lower().rstrip(".") for n in re.split(r"[,\s]+", raw) if n]


def translate(container: ContainerInfo, env: Mapping[str, str], acme_email: str | None = None) -> Translation | None:
    """The labels ``env`` stands for; None when it declares no site."""
    env = {k: v.strip() for k, v in env.items() if k in ENV_KEYS and v.strip()}
    hosts_key = next((k for k in (*HOSTS, "VIRTUAL_HOST") if k in env), None)
    if hosts_key is None:
        return None

    def error(key: str, message: str) -> Translation:
        return Translation(SOURCE, errors=(Problem(f"container {container.name} env {key}", message),))

    path = env.get("VIRTUAL_PATH", "/")
    if path != "/":
        return error("VIRTUAL_PATH", f"{path[:40]!r}: only / is served (one container answers for the whole host); "
                                     "give this path its own host name")
    if "VIRTUAL_HOST_MULTIPORTS" in env:
        return error("VIRTUAL_HOST_MULTIPORTS", "not translated: declare each site with acme.* labels")
    method = env.get("HTTPS_METHOD", "redirect").lower()
    if method not in HTTPS_METHODS:
        return error("HTTPS_METHOD", f"{method[:40]!r} must be {', '.join(HTTPS_METHODS)}")
    keysize_key = next((k for k in ("ACME_KEYSIZE", "LETSENCRYPT_KEYSIZE") if k in env), None)
    if keysize_key is not None and env[keysize_key].lower() not in KEYSIZES:
        return error(keysize_key, f"{env[keysize_key][:40]!r} must be {', '.join(KEYSIZES)}")

    labels, origins = {"domains": env[hosts_key]}, {"domains": f"env {hosts_key}"}
    for key, label in (("VIRTUAL_PORT", "port"), ("VIRTUAL_PROTO", "scheme"), ("ACME_CERT_PROFILE", "profile")):
        if key in env:
            labels[label], origins[label] = env[key], f"env {key}"
    if "HSTS" in env:
        hsts = env["HSTS"]
        labels["hsts"] = hsts[len("max-age="):] if hsts.lower().startswith("max-age=") else hsts
        origins["hsts"] = "env HSTS"
    if keysize_key is not None:
        labels["key_type"], origins["key_type"] = KEYSIZES[env[keysize_key].lower()], f"env {keysize_key}"

    untranslated = [f"{k} ({why})" for k, why in IGNORED.items() if k in env]
    untranslated += [f"{k} ({_ONE_ACCOUNT}, ACME_EMAIL)" for k in EMAILS
                     if k in env and env[k].lower() != (acme_email or "").lower()]
    if method in ("noredirect", "nohttps"):
        untranslated.append(f"HTTPS_METHOD={method} (HTTP is always redirected to HTTPS)")
    if hosts_key == "ACME_HOST" and "LETSENCRYPT_HOST" in env and \
            _names(env["LETSENCRYPT_HOST"]) != _names(env["ACME_HOST"]):
        untranslated.append("LETSENCRYPT_HOST (ACME_HOST is used)")
    if hosts_key != "VIRTUAL_HOST" and "VIRTUAL_HOST" in env:
        extra = [n for n in _names(env["VIRTUAL_HOST"]) if n not in _names(env[hosts_key])]
        if extra:
            untranslated.append(f"VIRTUAL_HOST {', '.join(n[:80] for n in extra[:5])} (not in {hosts_key}: "
                                "the sidecar serves HTTPS only)")
    return Translation(SOURCE, labels, origins, untranslated=tuple(untranslated))


def vhost_includes(domains: tuple[str, ...], directory: str, files: Collection[str]) -> tuple[tuple[str, ...],
                                                                                            tuple[str, ...]]:
    """nginx-proxy's per-host files in ``directory`` for a site: ``<host>`` in the server and
    ``<host>_location`` in ``location /``, for each of its names that has one; ``default`` and
    ``default_location`` when none has."""
    def pick(suffix: str) -> tuple[str, ...]:
        own = [f"{directory}/{d}{suffix}" for d in domains if not d.startswith("*") and d + suffix in files]
        fallback = [f"{directory}/default{suffix}"] if "default" + suffix in files else []
        return tuple(own or fallback)

    return pick(""), pick("_location")
