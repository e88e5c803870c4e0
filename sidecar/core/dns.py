"""DNS-01: which certbot DNS plugin a site uses, and its credentials file. Pure.

A site validated over DNS-01 names a provider (``acme.dns_provider``, the sites file's
``dns_provider`` or ``ACME_DNS_PROVIDER``): one of certbot's own DNS plugins below,
optionally with a set name after a colon (``rfc2136:internal``) when one provider is used
with two sets of credentials (two accounts, two DNS servers).

The credentials are a file per provider (and set) in ``DNS_CREDENTIALS_DIR``, named
``<provider>.ini`` (``<provider>-<set>.ini``; Google's is JSON): certbot's own format,
passed to certbot by path. The sidecar only checks that the file exists and is private
(no access for group or others) and registers its values with ``redact`` so they never
appear in anything it says; it never logs the file.

==============  ====================================  ==========================  ========
provider        Debian package                        official image              wait (s)
==============  ====================================  ==========================  ========
cloudflare      python3-certbot-dns-cloudflare        certbot/dns-cloudflare      10
digitalocean    python3-certbot-dns-digitalocean      certbot/dns-digitalocean    10
dnsimple        python3-certbot-dns-dnsimple          certbot/dns-dnsimple        30
dnsmadeeasy     -                                     certbot/dns-dnsmadeeasy     60
gehirn          python3-certbot-dns-gehirn            certbot/dns-gehirn          30
google          python3-certbot-dns-google            certbot/dns-google          60
linode          python3-certbot-dns-linode            certbot/dns-linode          120
luadns          -                                     certbot/dns-luadns          30
nsone           -                                     certbot/dns-nsone           30
ovh             python3-certbot-dns-ovh               certbot/dns-ovh             120
rfc2136         python3-certbot-dns-rfc2136           certbot/dns-rfc2136         60
route53         python3-certbot-dns-route53           certbot/dns-route53         (own)
sakuracloud     python3-certbot-dns-sakuracloud       certbot/dns-sakuracloud     90
==============  ====================================  ==========================  ========
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

HTTP_01 = "http-01"
DNS_01 = "dns-01"
CHALLENGES = (HTTP_01, DNS_01)

_SET = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# INI keys whose values are addresses and parameters, not secrets (everything else is registered).
_NOT_SECRET = re.compile(r"(?:_server|_port|_algorithm|_endpoint|_propagation_seconds|^region|^output)$")
# JSON keys (Google's service account file) that hold no secret.
_JSON_PUBLIC = frozenset({"type", "universe_domain", "auth_uri", "token_uri", "auth_provider_x509_cert_url",
                          "client_x509_cert_url", "project_id"})


@dataclass(frozen=True)
class Provider:
    """One certbot DNS plugin."""

    name: str
    package: str          # Debian's package ("" when Debian has none)
    image: str            # the official image (tag it like certbot/certbot's: :v5.8.0)
    propagation: int | None  # certbot's default wait for propagation; None: the plugin waits by itself
    suffix: str = ".ini"  # the credentials file's extension
    # Where certbot gets the file: "" for --dns-NAME-credentials, else this environment variable.
    credentials_env: str = ""

    @property
    def plugin(self) -> str:
        return f"dns-{self.name}"


PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("cloudflare", "python3-certbot-dns-cloudflare", "certbot/dns-cloudflare", 10),
    Provider("digitalocean", "python3-certbot-dns-digitalocean", "certbot/dns-digitalocean", 10),
    Provider("dnsimple", "python3-certbot-dns-dnsimple", "certbot/dns-dnsimple", 30),
    Provider("dnsmadeeasy", "", "certbot/dns-dnsmadeeasy", 60),
    Provider("gehirn", "python3-certbot-dns-gehirn", "certbot/dns-gehirn", 30),
    Provider("google", "python3-certbot-dns-google", "certbot/dns-google", 60, suffix=".json"),
    Provider("linode", "python3-certbot-dns-linode", "certbot/dns-linode", 120),
    Provider("luadns", "", "certbot/dns-luadns", 30),
    Provider("nsone", "", "certbot/dns-nsone", 30),
    Provider("ovh", "python3-certbot-dns-ovh", "certbot/dns-ovh", 120),
    Provider("rfc2136", "python3-certbot-dns-rfc2136", "certbot/dns-rfc2136", 60),
    # AWS credentials (an INI [default] section with aws_access_key_id, aws_secret_access_key) are read
    # by boto3 from the file this variable names; the plugin waits for Route 53 to apply the change.
    Provider("route53", "python3-certbot-dns-route53", "certbot/dns-route53", None,
             credentials_env="AWS_SHARED_CREDENTIALS_FILE"),
    Provider("sakuracloud", "python3-certbot-dns-sakuracloud", "certbot/dns-sakuracloud", 90),
)}


@dataclass(frozen=True)
class DnsChallenge:
    """A provider and which of its credentials files (``set``: "" for ``<provider>.ini``)."""

    provider: Provider
    set: str = ""

    @property
    def spec(self) -> str:
        return f"{self.provider.name}:{self.set}" if self.set else self.provider.name

    @property
    def file_name(self) -> str:
        return f"{self.provider.name}{'-' + self.set if self.set else ''}{self.provider.suffix}"

    def credentials(self, directory: str) -> str:
        return str(PurePosixPath(directory) / self.file_name)

    def arguments(self, directory: str, propagation: int | None) -> list[str]:
        """certbot's authenticator arguments (instead of ``--webroot -w DIR``)."""
        p = self.provider
        args = [f"--{p.plugin}"]
        if not p.credentials_env:
            args += [f"--{p.plugin}-credentials", self.credentials(directory)]
        wait = propagation if propagation is not None else p.propagation
        if p.propagation is not None and wait is not None:
            args += [f"--{p.plugin}-propagation-seconds", str(wait)]
        return args

    def environment(self, directory: str) -> dict[str, str]:
        p = self.provider
        return {p.credentials_env: self.credentials(directory)} if p.credentials_env else {}


def parse_provider(raw: object) -> DnsChallenge:
    """``rfc2136`` or ``rfc2136:internal`` -> DnsChallenge; ValueError with a one-line reason.
    The reason never repeats the value: a token pasted here by mistake must not be echoed."""
    text = raw.strip().lower() if isinstance(raw, str) else ""
    name, _, cred_set = text.partition(":")
    provider = PROVIDERS.get(name)
    if provider is None:
        raise ValueError(f"not a DNS provider (known: {', '.join(PROVIDERS)}; optionally :SET for "
                         "<provider>-<SET>.ini)")
    if ":" in text and not _SET.fullmatch(cred_set):
        raise ValueError("the credentials set after ':' is 1-32 lower-case letters, digits, '_' or '-'")
    return DnsChallenge(provider, cred_set)


def parse_challenge(raw: object) -> str:
    value = raw.strip().lower() if isinstance(raw, str) else ""
    if value not in CHALLENGES:
        raise ValueError(f"{str(raw)[:40]!r} must be {' or '.join(CHALLENGES)}")
    return value


def unsafe_mode(mode: int) -> bool:
    """A credentials file anyone but its owner may read, write or run."""
    return bool(mode & 0o077)


def secret_values(text: str, json_file: bool = False) -> list[str]:
    """Every value in a credentials file that may be a secret, to register with ``redact``.

    INI: each ``key = value`` (also ``key: value`` and ``key value``, as a typo would have it)
    except addresses and parameters (``*_server``, ``*_port``, ``*_algorithm``, ...). JSON: every
    string but the public ones, and each line of a multi-line one (a PEM key)."""
    found: list[str] = []
    if json_file:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for key, value in doc.items():
                if isinstance(value, str) and key not in _JSON_PUBLIC:
                    found.append(value)
                    found += [ln.strip() for ln in value.splitlines() if len(ln.strip()) >= 16]
            return found
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)\s*(?:[=:]|\s)\s*(.*)$", line)
        if match is None:
            found.append(line)
            continue
        key, value = match.group(1), match.group(2).strip().strip("\"'")
        if not _NOT_SECRET.search(key.lower()):
            found.append(value)
    return found
