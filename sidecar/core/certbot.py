"""certbot's command line and what its output means. Pure.

``arguments`` builds the ``certonly --webroot`` invocation for one decision (with a DNS
plugin's arguments instead of ``--webroot`` for a DNS-01 site); ``classify`` turns an exit
code and captured output into an ``Outcome`` with a one-line reason and, for rate limits,
the moment the CA allows a retry; ``classify_dns`` refines it for a DNS-01 run.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sidecar.core import dns
from sidecar.core.errors import ConfigError
from sidecar.core.model import SiteOptions
from sidecar.core.planner import Action
from sidecar.core.settings import Settings


class Failure(str, enum.Enum):
    RATE_LIMITED = "rate-limited"
    VALIDATION = "validation"          # the CA could not fetch the challenge (DNS, firewall, nginx)
    ACCOUNT_MISSING = "account-missing"  # the CA no longer knows the stored account
    TRANSIENT = "transient"            # CA or network hiccup: retry with back-off
    CA_UNREACHABLE = "ca-unreachable"  # no request reached the CA (its name, a refused or timed-out
                                       # connection, TLS trust): retried like a hiccup, no order counted
    TIMEOUT = "timeout"
    PREFLIGHT = "preflight"            # our own check through nginx failed; the CA was not asked
    REJECTED = "rejected"              # the CA refuses these names (policy, CAA, malformed)
    DNS = "dns"                        # DNS-01: credentials refused, zone not found, TXT record not seen
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    summary: str
    failure: Failure | None = None
    retry_after: datetime | None = None
    # certbot said the existing certificate was kept (nothing issued)
    kept: bool = False
    # False when certbot never got an answer from the CA: that run cost the CA's budgets nothing
    reached_ca: bool = True
    # A DNS-01 failure the CA saw (no or a wrong TXT record): it spent a failed validation
    failed_at_ca: bool = False

    @property
    def failed_validation(self) -> bool:
        """Whether the CA counts this as a failed validation (its per-name budget)."""
        return self.failure == Failure.VALIDATION or self.failed_at_ca

    @property
    def transient(self) -> bool:
        return self.failure in (Failure.TRANSIENT, Failure.CA_UNREACHABLE)

    @property
    def account_wide(self) -> bool:
        """A rate limit that refuses every new order of the account (new orders per account, account
        registrations), read from the CA's detail text without its links: the limits page's anchors
        say "per-account" for per-name limits too (#authorization-failures-per-identifier-per-account)."""
        if self.failure != Failure.RATE_LIMITED:
            return False
        detail = _URL.sub("", self.summary).lower()
        return "new orders" in detail or "registrations" in detail or "by this account" in detail


_URL = re.compile(r"https?://\S+")


def arguments(
    settings: Settings,
    name: str,
    domains: tuple[str, ...],
    action: Action,
    config_dir: str | None = None,
    key_type: str | None = None,
    profile: str | None = None,
    account: str | None = None,
    challenge: dns.DnsChallenge | None = None,
) -> list[str]:
    """certbot's arguments. ``config_dir`` overrides the certificate directory (staging runs).
    ``challenge``: DNS-01 through that plugin instead of HTTP-01 through the webroot.
    The work and log directories are the runner's business (each run gets its own)."""
    key_type = key_type or settings.key_type
    profile = profile or settings.acme_profile
    auth = (challenge.arguments(str(settings.dns_credentials_dir), settings.propagation_for(challenge.provider.name))
            if challenge else ["--webroot", "-w", str(settings.webroot_dir)])
    args = [
        "certonly",
        *auth,
        "--cert-name", name,
        *[a for d in domains for a in ("-d", d)],
        *_account_arguments(settings, config_dir),
        "--key-type", key_type,
        "--expand",
    ]
    if key_type == "ecdsa":
        args += ["--elliptic-curve", "secp256r1"]
    else:
        args += ["--rsa-key-size", "2048"]
    if profile:
        args += ["--preferred-profile", profile]
    if account:
        # Renew with the account the lineage was issued with (adopted lineages keep theirs).
        args += ["--account", account]
    if action in (Action.RENEW, Action.REKEY):
        args.append("--force-renewal")
    else:
        args.append("--keep-until-expiring")
    return args


def _account_arguments(settings: Settings, config_dir: str | None) -> list[str]:
    """What certbot needs to register an ACME account (or to use the stored one)."""
    args = ["--non-interactive", "--agree-tos", "--no-eff-email", "--server", settings.acme_server,
            "--config-dir", config_dir or str(settings.certs_dir)]
    args += ["-m", settings.acme_email] if settings.acme_email else ["--register-unsafely-without-email"]
    if settings.eab_kid and settings.eab_hmac_key:
        args += ["--eab-kid", settings.eab_kid, "--eab-hmac-key", settings.eab_hmac_key]
    return args


def dns_challenge(settings: Settings, options: SiteOptions) -> dns.DnsChallenge | None:
    """A site's DNS-01 plugin and credentials (None: HTTP-01), its own or the environment's."""
    if (options.challenge or settings.challenge) != dns.DNS_01:
        return None
    spec = options.dns_provider or settings.dns_provider
    if spec is None:  # the sources refuse such a site; this is for sites built elsewhere
        raise ConfigError("the dns-01 challenge needs a DNS provider (dns_provider or ACME_DNS_PROVIDER)")
    return dns.parse_provider(spec)


def register_arguments(settings: Settings) -> list[str]:
    """``certbot register``: the ACME account, made ahead of the first certificate."""
    return ["register", *_account_arguments(settings, None)]


_RETRY_AFTER = re.compile(r"retry after (\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\s*UTC|Z)?", re.I)
# certbot's own words when the stored account is gone ("Account at /etc/letsencrypt/accounts/... does not
# exist") or the CA no longer knows it ("Account https://ca/acct/7 not found."); any other "account ... not
# found" (a validation error for account.example.com, say) is not that.
_ACCOUNT_GONE = re.compile(r"\b(?:account at \S+ does not exist|account https?://\S+ not found|no such account)",
                           re.I)
_POOL_HOST = re.compile(r"connectionpool\(host='([^']+)'")
_DETAIL = re.compile(r"^\s*Detail:\s*(.+)$", re.M)
_NOISE = (
    "Saving debug log", "Ask for help", "See the logfile", "Some challenges have failed",
    "Requesting a certificate", "Account registered", "- - - -", "Hint:",
)


def _one_line(output: str) -> str:
    details = _DETAIL.findall(output)
    if details:
        return " | ".join(dict.fromkeys(d.strip() for d in details))[:500]
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_NOISE)]
    for ln in reversed(useful):
        if ln.lower().startswith(("an unexpected error occurred", "error")) and ln is not useful[-1]:
            return " ".join(useful[useful.index(ln):])[:500]
    return (useful[-1] if useful else "no output")[:500]


def _unreached(low: str, server: str) -> str:
    """One sentence a person can act on when certbot's requests never reached the CA, else ""."""
    if not any(k in low for k in ("httpsconnectionpool", "httpconnectionpool", "requests.exceptions", "urllib3")):
        return ""
    host = _POOL_HOST.search(low)
    where = f"the CA at {server}" if server else f"the CA ({host.group(1)})" if host else "the CA"
    in_url = re.match(r"[a-z][a-z0-9+.-]*://([^/:?#]+)", server)
    name = host.group(1) if host else in_url.group(1) if in_url else "its host"
    if any(k in low for k in ("nameresolutionerror", "name or service not known", "temporary failure in name "
                               "resolution", "failed to resolve", "nodename nor servname")):
        return (f"cannot reach {where}: the name {name} does not resolve (check ACME_SERVER and the DNS the "
                "sidecar's network uses)")
    if "certificate verify failed" in low or "sslerror" in low or "ssl: " in low:
        return (f"cannot reach {where}: its TLS certificate is not trusted (check ACME_CA_BUNDLE, or a proxy "
                "intercepting TLS)")
    if "connection refused" in low:
        return f"cannot reach {where}: connection refused (is the CA down, or a firewall in the way?)"
    if "timed out" in low or "connecttimeout" in low:
        return f"cannot reach {where}: the connection timed out (check the network path or a proxy)"
    if "failed to establish" in low or "network is unreachable" in low or "no route to host" in low:
        return f"cannot reach {where}: no network path (check the sidecar's network and a proxy)"
    return ""


def classify(exit_code: int | None, output: str, now: datetime, server: str = "") -> Outcome:
    """Read certbot's exit code and output. ``exit_code`` None means it timed out.

    ``server``: the ACME directory, named in the sentence when the CA cannot be reached."""
    if exit_code is None:
        return Outcome(False, "certbot did not finish in time and was stopped", Failure.TIMEOUT)
    if exit_code == 0:
        kept = "Certificate not yet due for renewal" in output or "Keeping the existing certificate" in output
        return Outcome(True, "existing certificate kept" if kept else "certificate issued", kept=kept)

    text = output
    low = text.lower()
    summary = _one_line(text)
    # certbot prints only the problem's detail, e.g. "too many new orders (300) ... retry after ...: see
    # .../docs/rate-limits/#new-orders-per-account": any "too many" with a retry time or the limits page.
    if "ratelimited" in low or "too many" in low and any(k in low for k in ("rate limit", "rate-limit", "retry after")) \
            or "too many certificates" in low:
        match = _RETRY_AFTER.search(text)
        retry = None
        if match:
            retry = datetime.fromisoformat(match.group(1).replace(" ", "T")).replace(tzinfo=timezone.utc)
        return Outcome(False, summary, Failure.RATE_LIMITED, retry_after=retry or now + timedelta(hours=1))
    if "accountdoesnotexist" in low or _ACCOUNT_GONE.search(text):
        return Outcome(False, summary, Failure.ACCOUNT_MISSING)
    if any(k in low for k in ("rejectedidentifier", "caa record", "policy forbids", "forbidden by policy",
                               "malformed")):
        return Outcome(False, summary, Failure.REJECTED)
    if any(k in low for k in ("failed to authenticate", "unauthorized", "error:connection", "error:dns",
                               "invalid response", "timeout during connect")):
        return Outcome(False, summary, Failure.VALIDATION)
    unreached = _unreached(low, server)
    if unreached:
        return Outcome(False, unreached, Failure.CA_UNREACHABLE, reached_ca=False)
    if any(k in low for k in ("serverinternal", "503", "502", "service unavailable", "504", "500 internal")):
        where = f"the CA at {server}" if server else "the CA"
        return Outcome(False, f"{where} answered with a server error ({summary}); retried later", Failure.TRANSIENT)
    if any(k in low for k in ("connection refused", "max retries exceeded", "failed to establish",
                               "serverinternal", "badnonce", "timed out", "temporarily unavailable",
                               "service unavailable", "name or service not known", "503", "502",
                               "connection aborted", "remote end closed connection", "connection reset")):
        return Outcome(False, summary, Failure.TRANSIENT)
    return Outcome(False, summary, Failure.UNKNOWN)


# What certbot and its DNS plugins say when DNS-01 fails, and the CA's words for a TXT record it did not see.
_DNS_PLUGIN = ("encountered error adding txt record", "encountered error deleting txt record",
               "unable to determine base domain", "received response from server", "peer didn't",
               "error when making query", "credentials configuration file", "file not found: ",
               "error determining zone", "zone_id", "api error", "unable to locate credentials",
               "nocredentialserror", "invalidclienttokenid", "signaturedoesnotmatch", "accessdenied",
               "authentication error", "invalid api token", "pluginerror")
_DNS_AT_CA = ("txt record", "error retrieving txt", "nxdomain", "dns problem", "authenticator: dns-",
              "_acme-challenge")
_DNS_HINTS = (
    ("peer didn't like the signature", "the DNS server refused the TSIG signature: wrong secret in {file}?"),
    ("peer didn't know the key", "the DNS server does not know the TSIG key named in {file}"),
    ("unable to determine base domain", "no zone for this name on the DNS server in {file} (is the domain hosted "
                                        "there?)"),
    ("received response from server: refused", "the DNS server refused the update (is the key in {file} allowed "
                                               "to update this zone?)"),
    ("received response from server: notauth", "the DNS server is not authoritative or refused the key in {file}"),
    ("error when making query", "the DNS server in {file} did not answer"),
    ("missing property in credentials", "{file} lacks a setting the plugin needs"),
)


def classify_dns(outcome: Outcome, output: str, challenge: dns.DnsChallenge, directory: str) -> Outcome:
    """The ``classify`` outcome of a DNS-01 run, with DNS failures as ``Failure.DNS`` and a reason
    naming the plugin and, where it helps, the credentials file. Rate limits, a gone account,
    refused names, timeouts and an unreachable CA stay what they are."""
    if outcome.ok or outcome.failure not in (Failure.VALIDATION, Failure.UNKNOWN, Failure.TRANSIENT):
        return outcome
    low = output.lower()
    at_ca = outcome.failure == Failure.VALIDATION or any(k in low for k in _DNS_AT_CA) and "detail:" in low
    if not at_ca and not any(k in low for k in _DNS_PLUGIN):
        return outcome
    file = challenge.credentials(directory)
    hint = next((h.format(file=file) for k, h in _DNS_HINTS if k in low), "")
    if at_ca and not hint:
        hint = ("the CA did not see the TXT record (is the zone hosted by this provider? a longer "
                f"DNS_PROPAGATION_SECONDS_{challenge.provider.name.upper()} may help)")
    summary = f"DNS-01 via {challenge.spec}: {outcome.summary}" + (f" ({hint})" if hint else "")
    return Outcome(False, summary[:600], Failure.DNS, failed_at_ca=at_ca)
