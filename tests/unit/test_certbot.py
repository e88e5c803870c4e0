from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sidecar.core.certbot import Failure, arguments, classify
from sidecar.core.planner import Action
from sidecar.core.settings import Settings

from .builders import NOW

SETTINGS = Settings(
    acme_server="https://acme.test/dir",
    acme_email="ops@example.com",
    certs_dir=Path("/etc/letsencrypt"),
    webroot_dir=Path("/var/www/acme"),
)
DOMAINS = ("a.example.com", "www.a.example.com", "xn--bcher-kva.example")


def _pairs(args: list[str]) -> list[tuple[str, str]]:
    return list(zip(args, args[1:]))


@pytest.mark.parametrize(
    ("action", "flag"),
    [
        (Action.ISSUE, "--keep-until-expiring"),
        (Action.EXPAND, "--keep-until-expiring"),
        (Action.REKEY, "--force-renewal"),
        (Action.RENEW, "--force-renewal"),
    ],
    ids=["issue", "expand", "rekey", "renew"],
)
def test_arguments_per_action(action: Action, flag: str) -> None:
    args = arguments(SETTINGS, "a.example.com", DOMAINS, action)
    other = ({"--keep-until-expiring", "--force-renewal"} - {flag}).pop()
    assert flag in args and other not in args
    assert args[0] == "certonly"
    assert ("--webroot" in args) and ("-w", "/var/www/acme") in _pairs(args)
    assert ("--cert-name", "a.example.com") in _pairs(args)
    assert [b for a, b in _pairs(args) if a == "-d"] == list(DOMAINS)
    assert ("--server", "https://acme.test/dir") in _pairs(args)
    assert ("--config-dir", "/etc/letsencrypt") in _pairs(args)
    assert ("-m", "ops@example.com") in _pairs(args)
    assert "--register-unsafely-without-email" not in args
    assert {"--non-interactive", "--agree-tos", "--expand"} <= set(args)


def test_arguments_without_email() -> None:
    args = arguments(replace(SETTINGS, acme_email=None), "a.example.com", DOMAINS, Action.ISSUE)
    assert "--register-unsafely-without-email" in args and "-m" not in args


@pytest.mark.parametrize(
    ("key_type", "present", "absent"),
    [
        ("ecdsa", [("--key-type", "ecdsa"), ("--elliptic-curve", "secp256r1")], "--rsa-key-size"),
        ("rsa", [("--key-type", "rsa"), ("--rsa-key-size", "2048")], "--elliptic-curve"),
    ],
    ids=["ecdsa", "rsa"],
)
def test_arguments_key_type(key_type: str, present: list[tuple[str, str]], absent: str) -> None:
    args = arguments(replace(SETTINGS, key_type=key_type), "a.example.com", DOMAINS, Action.REKEY)
    for pair in present:
        assert pair in _pairs(args)
    assert absent not in args


LOG_TAIL = (
    "Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile "
    "/var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details.\n"
)

SUCCESS = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Account registered.
Requesting a certificate for a.example.com and www.a.example.com

Successfully received certificate.
Certificate is saved at: /etc/letsencrypt/live/a.example.com/fullchain.pem
Key is saved at:         /etc/letsencrypt/live/a.example.com/privkey.pem
This certificate expires on 2026-08-30.
These files will be updated when the certificate renews.
NEXT STEPS:
- The certificate will need to be renewed before it expires. Certbot can automatically renew the certificate in the background, but you may need to take steps to enable that functionality. See https://certbot.org/renewal-setup for instructions.
"""

KEPT = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Certificate not yet due for renewal

- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
Certificate not yet due for renewal; no action taken.
- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
"""

RATE_LIMITED = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for a.example.com
An unexpected error occurred:
too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-11-27 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers
""" + LOG_TAIL

RATE_LIMITED_NO_TIME = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for a.example.com
An unexpected error occurred:
urn:ietf:params:acme:error:rateLimited :: There were too many requests of a given type :: too many failed authorizations recently
""" + LOG_TAIL

VALIDATION = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for a.example.com and www.a.example.com

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: a.example.com
  Type:   unauthorized
  Detail: 203.0.113.10: Invalid response from http://a.example.com/.well-known/acme-challenge/3kJ9sd: 404

  Domain: www.a.example.com
  Type:   dns
  Detail: DNS problem: NXDOMAIN looking up A for www.a.example.com - check that a DNS record exists for this domain

Hint: The Certificate Authority failed to download the temporary challenge files created by Certbot. Ensure that the listed domains serve their content from the provided --webroot-path/-w and that files created there can be downloaded from the internet.

Some challenges have failed.
""" + LOG_TAIL

ACCOUNT_GONE_LOCALLY = """\
An unexpected error occurred:
Account at /etc/letsencrypt/accounts/acme.test/directory/0123abcd does not exist
"""

# What certbot 4.0 says when a restarted Pebble no longer knows the stored account (seen end to end).
ACCOUNT_FORGOTTEN_BY_THE_CA = """\
An unexpected error occurred:
Account https://pebble:14000/my-account/3f2a9c not found.
"""

# "account" and "not found" in a validation error: not the account (it used to drop the stored one).
NOT_AN_ACCOUNT_PROBLEM = """\
Certbot failed to authenticate some domains (authenticator: webroot).
  Domain: account.example.com
  Type:   unauthorized
  Detail: 203.0.113.10: Invalid response from http://account.example.com/.well-known/acme-challenge/x: 404 Not Found
"""

ACCOUNT_MISSING = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
An unexpected error occurred:
urn:ietf:params:acme:error:accountDoesNotExist :: The request specified an account that does not exist :: Account "https://acme.test/my-account/7" not found
""" + LOG_TAIL

CONNECTION_REFUSED = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
An unexpected error occurred:
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='acme.test', port=14000): Max retries exceeded with url: /dir (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d9e50>: Failed to establish a new connection: [Errno 111] Connection refused'))
""" + LOG_TAIL

CA_NOT_RESOLVABLE = """\
An unexpected error occurred:
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='acme-v02.api.letsencrypt.org', port=443): Max retries exceeded with url: /directory (Caused by NameResolutionError("<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve 'acme-v02.api.letsencrypt.org' ([Errno -2] Name or service not known)"))
""" + LOG_TAIL

CA_NOT_TRUSTED = """\
An unexpected error occurred:
requests.exceptions.SSLError: HTTPSConnectionPool(host='pebble', port=14000): Max retries exceeded with url: /dir (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1000)')))
""" + LOG_TAIL

CA_TIMEOUT = """\
An unexpected error occurred:
requests.exceptions.ConnectTimeout: HTTPSConnectionPool(host='pebble', port=14000): Max retries exceeded with url: /dir (Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection object at 0x7f>, 'Connection to pebble timed out. (connect timeout=45)'))
""" + LOG_TAIL

SERVER_ERROR = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for a.example.com
An unexpected error occurred:
urn:ietf:params:acme:error:serverInternal :: The server experienced an internal error :: Error creating new order
""" + LOG_TAIL

REJECTED = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for a.example.invalid
An unexpected error occurred:
urn:ietf:params:acme:error:rejectedIdentifier :: The server will not issue certificates for the identifier :: Error creating new order :: Cannot issue for "a.example.invalid": Domain name does not end with a valid public suffix (TLD)
""" + LOG_TAIL

VALIDATION_REFUSED = """\
Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for a.example.com

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: a.example.com
  Type:   connection
  Detail: 203.0.113.10: Fetching http://a.example.com/.well-known/acme-challenge/x1: Connection refused

Hint: The Certificate Authority failed to download the temporary challenge files created by Certbot.

Some challenges have failed.
""" + LOG_TAIL

WEIRD = "Saving debug log to /var/log/letsencrypt/letsencrypt.log\nSomething odd happened\n" + LOG_TAIL


@pytest.mark.parametrize(
    ("exit_code", "output", "ok", "failure", "kept", "summary_has"),
    [
        (0, SUCCESS, True, None, False, "certificate issued"),
        (0, KEPT, True, None, True, "existing certificate kept"),
        (1, RATE_LIMITED, False, Failure.RATE_LIMITED, False, "too many certificates (5)"),
        (1, RATE_LIMITED_NO_TIME, False, Failure.RATE_LIMITED, False, "too many failed authorizations"),
        (1, VALIDATION, False, Failure.VALIDATION, False,
         "Invalid response from http://a.example.com/.well-known/acme-challenge/3kJ9sd: 404 | DNS problem"),
        (1, VALIDATION_REFUSED, False, Failure.VALIDATION, False,
         "203.0.113.10: Fetching http://a.example.com/.well-known/acme-challenge/x1: Connection refused"),
        (1, ACCOUNT_MISSING, False, Failure.ACCOUNT_MISSING, False, "account that does not exist"),
        (1, ACCOUNT_GONE_LOCALLY, False, Failure.ACCOUNT_MISSING, False, "Account at"),
        (1, ACCOUNT_FORGOTTEN_BY_THE_CA, False, Failure.ACCOUNT_MISSING, False, "not found"),
        (1, NOT_AN_ACCOUNT_PROBLEM, False, Failure.VALIDATION, False, "Invalid response"),
        (1, CONNECTION_REFUSED, False, Failure.CA_UNREACHABLE, False,
         "cannot reach the CA (acme.test): connection refused (is the CA down, or a firewall in the way?)"),
        (1, CA_NOT_RESOLVABLE, False, Failure.CA_UNREACHABLE, False,
         "cannot reach the CA (acme-v02.api.letsencrypt.org): the name acme-v02.api.letsencrypt.org does not resolve"),
        (1, CA_NOT_TRUSTED, False, Failure.CA_UNREACHABLE, False, "its TLS certificate is not trusted (check ACME_CA_BUNDLE"),
        (1, CA_TIMEOUT, False, Failure.CA_UNREACHABLE, False, "the connection timed out"),
        (1, SERVER_ERROR, False, Failure.TRANSIENT, False, "internal error"),
        (1, REJECTED, False, Failure.REJECTED, False, "Cannot issue for"),
        (1, WEIRD, False, Failure.UNKNOWN, False, "Something odd happened"),
        (1, "", False, Failure.UNKNOWN, False, "no output"),
        (None, "Requesting a certificate for a.example.com\n", False, Failure.TIMEOUT, False, "did not finish"),
    ],
    ids=["success", "not-yet-due", "rate-limit-retry-after", "rate-limit-no-time", "validation",
         "validation-connection-refused-is-not-transient", "account-missing", "account-gone-locally", "account-forgotten-by-the-ca", "account-in-a-validation-error-is-not-the-account", "ca-connection-refused", "ca-not-resolvable", "ca-not-trusted", "ca-timeout", "server-error", "rejected", "unknown", "no-output", "timeout"],
)
def test_classify(
    exit_code: int | None, output: str, ok: bool, failure: Failure | None, kept: bool, summary_has: str
) -> None:
    out = classify(exit_code, output, NOW)
    assert (out.ok, out.failure, out.kept) == (ok, failure, kept)
    assert summary_has in out.summary
    assert "\n" not in out.summary and len(out.summary) <= 500
    assert not out.summary.startswith(("Saving debug log", "Ask for help"))
    if failure is not Failure.RATE_LIMITED:
        assert out.retry_after is None


def test_validation_summary_is_the_details_only() -> None:
    out = classify(1, VALIDATION, NOW)
    assert out.summary == (
        "203.0.113.10: Invalid response from http://a.example.com/.well-known/acme-challenge/3kJ9sd: 404 | "
        "DNS problem: NXDOMAIN looking up A for www.a.example.com - check that a DNS record exists for this domain"
    )


@pytest.mark.parametrize(
    ("output", "retry_after"),
    [
        (RATE_LIMITED, datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)),
        (RATE_LIMITED.replace("2026-11-27 10:00:00 UTC", "2026-11-27T10:00:00Z"),
         datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)),
        (RATE_LIMITED_NO_TIME, NOW + timedelta(hours=1)),
    ],
    ids=["utc-words", "iso-z", "no-time-one-hour"],
)
def test_rate_limit_retry_after(output: str, retry_after: datetime) -> None:
    out = classify(1, output, NOW)
    assert out.failure is Failure.RATE_LIMITED
    assert out.retry_after == retry_after
    assert out.retry_after is not None and out.retry_after.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("detail", "account_wide"), [
    ("too many new orders (300) created by this account in the last 3h0m0s, retry after 2026-11-29 14:29:36 UTC: "
     "see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account", True),
    ("too many registrations (10) from this IP address in the last 3h0m0s, retry after 2026-11-29 14:29:36 UTC: "
     "see https://letsencrypt.org/docs/rate-limits/#new-registrations-per-ip-address", True),
    # per name, although the limits page's anchor ends in "per-account": seen end to end holding back other sites
    ('too many failed authorizations (5) for "xf.rl.test" in the last 1h0m0s, retry after 2026-11-29 14:29:36 UTC: '
     "see https://letsencrypt.org/docs/rate-limits/#authorization-failures-per-identifier-per-account", False),
    ("too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after "
     "2026-11-29 14:29:36 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers",
     False),
])
def test_only_account_wide_limits_hold_back_other_sites(detail: str, account_wide: bool) -> None:
    outcome = classify(1, "An unexpected error occurred:\n" + detail + "\n", datetime(2026, 11, 29, tzinfo=timezone.utc))
    assert outcome.failure == Failure.RATE_LIMITED and outcome.retry_after is not None
    assert outcome.account_wide is account_wide
