"""DNS-01 and wildcards (issue 15): names, options, settings, certbot's arguments and failures,
the credentials pre-flight, nginx's server names, and the loop with a fake certbot."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.adapters import runner
from sidecar.adapters.docker_api import RunResult
from sidecar.core import certbot, dns, options, redact, render, settings as settings_mod
from sidecar.core.desired import merge
from sidecar.core.domains import DomainError, normalize_domain, parse_domain_list
from sidecar.core.errors import ConfigError
from sidecar.core.events import Kind
from sidecar.core.model import ProblemKind, Site, SiteOptions
from sidecar.core.planner import Action
from sidecar.engine import credentials
from sidecar.sources.labels import site_from_container
from sidecar.sources.sitesfile import parse_sites_file

from .builders import assert_nginx_syntax_sane, cert as make_certificate, container, site
from .test_loop import NOW as LOOP_NOW, FakeCertbot, _no_psl, app, make  # noqa: F401 - _no_psl: autouse

NETS = ("web",)
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
RFC2136_INI = f"""# BIND
dns_rfc2136_server = 172.20.0.5
dns_rfc2136_port = 53
dns_rfc2136_name = tsig-key.
dns_rfc2136_secret = {SECRET}
dns_rfc2136_algorithm = HMAC-SHA512
"""
DNS = options.Defaults("http-01", "rfc2136")


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    redact.clear()


# -- names -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("*.Example.COM", "*.example.com"),
    ("*.bücher.example.", "*.xn--bcher-kva.example"),
    ("*.a.b.example.com", "*.a.b.example.com"),
], ids=["case", "idna", "deep"])
def test_wildcards_are_accepted_where_asked_for(raw: str, expected: str) -> None:
    assert normalize_domain(raw, wildcard=True) == expected
    with pytest.raises(DomainError, match="cannot be validated over HTTP-01"):
        normalize_domain(raw)


@pytest.mark.parametrize("raw", ["*", "*.com", "a.*.example.com", "**.example.com", "*example.com", "*.*.example.com"])
def test_malformed_wildcards_are_refused(raw: str) -> None:
    with pytest.raises(DomainError):
        normalize_domain(raw, wildcard=True)


def test_a_wildcard_first_names_its_lineage_wildcard_dot() -> None:
    assert site("*.example.com").name == "wildcard.example.com"
    assert site("example.com", "*.example.com").name == "example.com"
    assert parse_domain_list("*.example.com example.com", wildcard=True) == ("*.example.com", "example.com")


def test_a_name_taken_by_another_site_is_a_conflict() -> None:
    literal = site("wildcard.example.com", source="container a")
    wild = site("*.example.com", source="container b")
    state = merge([], [literal, wild])
    assert [s.source for s in state.sites] == ["container a"]
    (problem,) = state.problems
    assert problem.kind is ProblemKind.DOMAIN_CONFLICT and "wildcard.example.com" in problem.message


# -- labels and the sites file --------------------------------------------------------------
def test_labels_choose_dns01_and_a_provider() -> None:
    c = container("w", {"acme.domains": "example.com,*.example.com", "acme.challenge": "DNS-01",
                        "acme.dns_provider": "rfc2136:internal"})
    s = site_from_container(c, "acme", NETS)
    assert isinstance(s, Site), s
    assert (s.options.challenge, s.options.dns_provider) == ("dns-01", "rfc2136:internal")
    assert s.options.origin("challenge") == "label acme.challenge"


@pytest.mark.parametrize(("labels", "defaults", "label", "words"), [
    ({"acme.domains": "*.example.com"}, options.Defaults(), "acme.domains", "cannot be validated over HTTP-01"),
    ({"acme.domains": "*.example.com", "acme.challenge": "http-01"}, DNS, "acme.domains", "HTTP-01"),
    ({"acme.domains": "a.example.com", "acme.challenge": "dns-01"}, options.Defaults(), "acme.challenge",
     "needs a DNS provider"),
    ({"acme.domains": "a.example.com", "acme.dns_provider": "rfc2136"}, options.Defaults(), "acme.dns_provider",
     "only used with the dns-01"),
    ({"acme.domains": "a.example.com", "acme.challenge": "dns"}, DNS, "acme.challenge", "http-01 or dns-01"),
    ({"acme.domains": "a.example.com", "acme.challenge": "dns-01", "acme.dns_provider": "bind"}, DNS,
     "acme.dns_provider", "not a DNS provider"),
    ({"acme.domains": "a.example.com", "acme.challenge": "dns-01", "acme.dns_provider": "rfc2136:a b"}, DNS,
     "acme.dns_provider", "credentials set"),
], ids=["wildcard-default-http", "wildcard-http", "no-provider", "provider-without-dns", "bad-challenge",
        "unknown-provider", "bad-set"])
def test_bad_combinations_are_one_line_naming_the_label(labels: dict[str, str], defaults: options.Defaults,
                                                        label: str, words: str) -> None:
    p = site_from_container(container("app", labels), "acme", NETS, defaults)
    assert not isinstance(p, Site) and p is not None
    assert p.source == f"container app label {label}" and words in p.message, p


def test_the_environment_default_makes_wildcards_fine() -> None:
    s = site_from_container(container("app", {"acme.domains": "*.example.com"}), "acme", NETS,
                            options.Defaults("dns-01", "cloudflare"))
    assert isinstance(s, Site) and s.name == "wildcard.example.com" and s.options.challenge is None


def test_a_token_pasted_as_provider_is_not_echoed() -> None:
    p = site_from_container(container("app", {"acme.domains": "a.example.com", "acme.challenge": "dns-01",
                                              "acme.dns_provider": "tok-3f9a8b7c6d5e"}), "acme", NETS)
    assert p is not None and not isinstance(p, Site) and "3f9a8b7c6d5e" not in p.message


def test_sites_file_keys() -> None:
    sites, problems = parse_sites_file(
        "sites:\n"
        "  - {domains: [apex.example.com, '*.apex.example.com'], upstream: http://app:80, challenge: dns-01}\n"
        "  - {domains: ['*.x.example.com'], upstream: http://app:80}\n", "/config/sites.yml", DNS)
    assert [s.name for s in sites] == ["apex.example.com"]
    assert [p.message for p in problems] == [
        "domains: wildcard '*.x.example.com' cannot be validated over HTTP-01 (use the dns-01 challenge)"]


# -- settings ------------------------------------------------------------------------------
def test_settings_read_the_dns_variables() -> None:
    s = settings_mod.load({"ACME_CHALLENGE": "dns-01", "ACME_DNS_PROVIDER": "Cloudflare",
                           "DNS_CREDENTIALS_DIR": "/etc/nginx-acme-sidecar/dns", "DNS_PROPAGATION_SECONDS": "30",
                           "DNS_PROPAGATION_SECONDS_RFC2136": "1",
                           "CERTBOT_IMAGE_CLOUDFLARE": "certbot/dns-cloudflare:v4.0.0"})
    assert (s.challenge, s.dns_provider, str(s.dns_credentials_dir)) == ("dns-01", "cloudflare",
                                                                         "/etc/nginx-acme-sidecar/dns")
    assert (s.propagation_for("rfc2136"), s.propagation_for("ovh")) == (1, 30)
    assert (s.image_for("cloudflare"), s.image_for("rfc2136"), s.image_for(None)) == (
        "certbot/dns-cloudflare:v4.0.0", settings_mod.DEFAULT_CERTBOT_IMAGE, settings_mod.DEFAULT_CERTBOT_IMAGE)
    assert settings_mod.load({}).challenge == "http-01" and settings_mod.load({}).dns_provider is None


@pytest.mark.parametrize(("env", "variable"), [
    ({"ACME_CHALLENGE": "dns"}, "ACME_CHALLENGE"),
    ({"ACME_DNS_PROVIDER": "bind9"}, "ACME_DNS_PROVIDER"),
    ({"DNS_PROPAGATION_SECONDS": "soon"}, "DNS_PROPAGATION_SECONDS"),
    ({"DNS_PROPAGATION_SECONDS_OVH": "4000"}, "DNS_PROPAGATION_SECONDS_OVH"),
    ({"DNS_PROPAGATION_SECONDS_BIND": "1"}, "DNS_PROPAGATION_SECONDS_BIND"),
    ({"CERTBOT_IMAGE_OVH": "not an image"}, "CERTBOT_IMAGE_OVH"),
    ({"DNS_CREDENTIALS_DIR": "secrets"}, "DNS_CREDENTIALS_DIR"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_dns_variables_stop_the_start_naming_them(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings_mod.load(env)


# -- certbot -------------------------------------------------------------------------------
def test_dns01_arguments_replace_the_webroot() -> None:
    s = settings_mod.Settings(dns_propagation=(("rfc2136", 1),))
    args = certbot.arguments(s, "wildcard.example.com", ("*.example.com",), Action.ISSUE,
                             challenge=dns.parse_provider("rfc2136"))
    assert "--webroot" not in args and "-w" not in args
    assert args[1:7] == ["--dns-rfc2136", "--dns-rfc2136-credentials", "/run/secrets/rfc2136.ini",
                         "--dns-rfc2136-propagation-seconds", "1", "--cert-name"]
    assert args[args.index("-d") + 1] == "*.example.com"
    plain = certbot.arguments(s, "a.example.com", ("a.example.com",), Action.ISSUE)
    assert plain[1:4] == ["--webroot", "-w", "/var/www/acme"]


@pytest.mark.parametrize(("spec", "args", "env"), [
    ("cloudflare", ["--dns-cloudflare", "--dns-cloudflare-credentials", "/s/cloudflare.ini",
                    "--dns-cloudflare-propagation-seconds", "10"], {}),
    ("google:prod", ["--dns-google", "--dns-google-credentials", "/s/google-prod.json",
                     "--dns-google-propagation-seconds", "60"], {}),
    ("route53", ["--dns-route53"], {"AWS_SHARED_CREDENTIALS_FILE": "/s/route53.ini"}),
], ids=["cloudflare", "google-set", "route53"])
def test_each_provider_gets_its_plugin_and_credentials(spec: str, args: list[str], env: dict[str, str]) -> None:
    c = dns.parse_provider(spec)
    assert c.arguments("/s", None) == args and c.environment("/s") == env


def test_a_site_without_its_own_challenge_uses_the_environment() -> None:
    s = settings_mod.Settings(challenge="dns-01", dns_provider="ovh")
    assert certbot.dns_challenge(s, SiteOptions()) == dns.parse_provider("ovh")
    assert certbot.dns_challenge(s, SiteOptions(challenge="http-01")) is None
    assert certbot.dns_challenge(settings_mod.Settings(), SiteOptions(challenge="dns-01", dns_provider="linode"))
    with pytest.raises(ConfigError):
        certbot.dns_challenge(settings_mod.Settings(), SiteOptions(challenge="dns-01"))


NOW = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
TAIL = "Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile x.\n"
# certbot 4.0 with python3-certbot-dns-rfc2136 against BIND 9.20 and Pebble, as captured.
DNS_OUTPUTS = {
    "bad-secret": ("Encountered exception during recovery: certbot.errors.PluginError: Encountered error deleting "
                   "TXT record: The peer didn't like the signature we sent\nEncountered error adding TXT record: "
                   "The peer didn't like the signature we sent\n" + TAIL, "wrong secret", False),
    "unknown-key": ("Encountered error adding TXT record: The peer didn't know the key we used\n" + TAIL,
                    "does not know the TSIG key", False),
    "no-zone": ("Unable to determine base domain for _acme-challenge.x.nozone.test using names: "
                "['_acme-challenge.x.nozone.test', 'x.nozone.test', 'nozone.test', 'test'].\n" + TAIL,
                "no zone", False),
    "refused": ("Encountered exception during recovery: certbot.errors.PluginError: Received response from "
                "server: REFUSED\nReceived response from server: REFUSED\n" + TAIL, "refused the update", False),
    "no-answer": ("Encountered error when making query: The DNS operation timed out.\n" + TAIL, "did not answer",
                  False),
    "missing-setting": ("Missing property in credentials configuration file /run/secrets/rfc2136.ini:\n"
                        " * Property \"dns_rfc2136_secret\" not found (should be TSIG key secret).\n" + TAIL,
                        "lacks a setting", False),
    "txt-not-seen": ("Certbot failed to authenticate some domains (authenticator: dns-rfc2136). The Certificate "
                     "Authority reported these problems:\n  Domain: y.dns.test\n  Type:   unauthorized\n"
                     "  Detail: Error retrieving TXT records for DNS challenge (\"DNS lookup for "
                     "\\\"_acme-challenge.y.dns.test\\\" returned an unsuccessful response\")\n\nHint: ...\n"
                     "Some challenges have failed.\n" + TAIL, "did not see the TXT record", True),
}


@pytest.mark.parametrize("case", list(DNS_OUTPUTS))
def test_dns01_failures_are_their_own_kind(case: str) -> None:
    output, words, at_ca = DNS_OUTPUTS[case]
    challenge = dns.parse_provider("rfc2136")
    outcome = certbot.classify_dns(certbot.classify(1, output, NOW), output, challenge, "/run/secrets")
    assert outcome.failure is certbot.Failure.DNS, outcome
    assert outcome.summary.startswith("DNS-01 via rfc2136: ") and words in outcome.summary, outcome.summary
    assert outcome.failed_validation is at_ca
    assert "\n" not in outcome.summary


def test_other_failures_of_a_dns01_run_stay_what_they_are() -> None:
    challenge = dns.parse_provider("rfc2136")
    limited = "Detail: too many certificates (5) already issued for this exact set, retry after 2026-11-30 10:00:00 UTC"
    for output, kind in ((limited, certbot.Failure.RATE_LIMITED),
                         ("Detail: Order included an identifier forbidden by policy", certbot.Failure.REJECTED)):
        assert certbot.classify_dns(certbot.classify(1, output, NOW), output, challenge, "/s").failure is kind
    ok = certbot.classify(0, "Successfully received certificate.", NOW)
    assert certbot.classify_dns(ok, "", challenge, "/s") is ok


# -- credentials ---------------------------------------------------------------------------
def test_secret_values_skip_addresses_and_parameters() -> None:
    assert dns.secret_values(RFC2136_INI) == ["tsig-key.", SECRET]
    assert dns.secret_values("dns_cloudflare_api_token: tok-123456\n; c\n[default]\naws_secret_access_key=abcd\n") \
        == ["tok-123456", "abcd"]
    doc = {"type": "service_account", "client_email": "dns@p.iam.example", "private_key_id": "0123456789abcdef",
           "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"}
    found = dns.secret_values(json.dumps(doc), json_file=True)
    assert "service_account" not in found and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" in found


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_the_credentials_preflight(tmp_path: Path) -> None:
    challenge = dns.parse_provider("rfc2136")
    missing = credentials.check(tmp_path, challenge)
    assert f"credentials file {tmp_path}/rfc2136.ini not found" in missing and "DNS_CREDENTIALS_DIR" in missing
    _write(tmp_path / "rfc2136.ini", RFC2136_INI, 0o644)
    unsafe = credentials.check(tmp_path, challenge)
    assert "not private (mode 0644" in unsafe and "chmod 600" in unsafe and SECRET not in unsafe
    assert redact.redact(f"x {SECRET} y") == f"x {redact.MARKER} y"  # registered while checking
    os.chmod(tmp_path / "rfc2136.ini", 0o600)
    assert credentials.check(tmp_path, challenge) == ""
    (tmp_path / "rfc2136-dir.ini").mkdir()
    assert "not a regular file" in credentials.check(tmp_path, dns.parse_provider("rfc2136:dir"))


def test_every_credentials_file_is_registered_at_start(tmp_path: Path) -> None:
    _write(tmp_path / "cloudflare.ini", "dns_cloudflare_api_token = cf-token-0123456789\n", 0o600)
    _write(tmp_path / "notes.txt", "not-a-credential-value\n", 0o600)
    assert credentials.register_all(tmp_path) == 1
    assert redact.redact("cf-token-0123456789 not-a-credential-value") == f"{redact.MARKER} not-a-credential-value"


# -- nginx ---------------------------------------------------------------------------------
def test_a_wildcard_is_served_for_one_label_by_a_regular_expression() -> None:
    s = site("example.com", "*.example.com")
    s = Site(s.domains, s.upstreams, s.source, s.source_kind, options=SiteOptions(
        challenge="dns-01", dns_provider="rfc2136", origins=(("challenge", "label acme.challenge"),)))
    cert = make_certificate("example.com", "*.example.com")
    text = render.render_site(s, cert, render.NginxTraits())
    assert_nginx_syntax_sane(text)
    assert "    server_name example.com ~^[^.]+\\.example\\.com$;\n" in text
    assert "challenge      dns-01  <- label acme.challenge" in text and "dns_provider   rfc2136  <- default" in text


# -- the loop, with a fake certbot ---------------------------------------------------------------
class DnsCertbot(FakeCertbot):
    """Also records every run's arguments and environment, and fails as BIND would on request."""

    def __init__(self, certs_dir: Path) -> None:
        super().__init__(certs_dir)
        self.args: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def run(self, args: list[str], environment: Any, site: str) -> RunResult:
        self.args.append(args)
        self.envs.append(dict(environment))
        return super().run(args, environment, site)


def wild(name: str, domains: str, **labels: str) -> Any:
    c = app(name, domains)
    return type(c)(id=c.id, name=c.name, labels={**c.labels, "acme.challenge": "dns-01", **labels},
                   networks=c.networks)


def _dns_loop(tmp_path: Path, containers: list[Any], mode: int = 0o600) -> tuple[Any, Any, DnsCertbot, Any]:
    creds = tmp_path / "secrets"
    creds.mkdir()
    _write(creds / "rfc2136.ini", RFC2136_INI, mode)
    r, docker, _, seen = make(tmp_path, containers, dns_provider="rfc2136", dns_credentials_dir=creds,
                              dns_propagation=(("rfc2136", 1),))
    fake = DnsCertbot(r.settings.certs_dir)
    r.issuer.runner = fake
    r.issuer.nginx_addr = ("192.0.2.1", 80)  # an HTTP pre-flight would fail: nothing answers there
    return r, docker, fake, seen


def test_a_wildcard_site_is_issued_over_dns01_without_an_http_preflight(tmp_path: Path) -> None:
    r, docker, fake, seen = _dns_loop(tmp_path, [wild("w", "*.wild.example.com"), app("a", "a.example.com")])
    r.issuer.nginx_addr = None  # the HTTP-01 site's pre-flight is not what this test is about
    r.run_pass()
    by_name = {a[a.index("--cert-name") + 1]: a for a in fake.args}
    assert set(by_name) == {"wildcard.wild.example.com", "a.example.com"}
    dns_args = by_name["wildcard.wild.example.com"]
    assert "--dns-rfc2136" in dns_args and "--webroot" not in dns_args
    assert dns_args[dns_args.index("--dns-rfc2136-credentials") + 1] == str(tmp_path / "secrets" / "rfc2136.ini")
    assert "--webroot" in by_name["a.example.com"]
    conf = (r.settings.conf_dir / "sidecar-site-wildcard.wild.example.com.conf").read_text()
    assert "server_name ~^[^.]+\\.wild\\.example\\.com$;" in conf
    assert seen.kinds("wildcard.wild.example.com").count(Kind.CERT_ISSUED) == 1


def test_a_dns01_site_never_probes_nginx_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.adapters import probe
    asked: list[str] = []
    monkeypatch.setattr(probe, "http_get", lambda addr, host, path, timeout=5.0: asked.append(host) or (0, ""))
    r, _, fake, seen = _dns_loop(tmp_path, [wild("n", "intranet.example.com")])
    r.run_pass()
    assert asked == [] and len(fake.args) == 1 and Kind.CERT_ISSUED in seen.kinds("intranet.example.com")


def test_an_open_credentials_file_fails_the_preflight_with_back_off(tmp_path: Path) -> None:
    r, _, fake, seen = _dns_loop(tmp_path, [wild("w", "*.wild.example.com")], mode=0o644)
    r.run_pass()
    assert fake.args == []  # the CA was not asked
    (failed,) = [e for e in seen.events if e.kind is Kind.CERT_FAILED]
    assert failed.details["failure"] == "preflight" and "rfc2136.ini is not private" in failed.message
    assert failed.details["failures"] == 1 and failed.details["next_attempt"] > LOOP_NOW
    r.run_pass()
    assert fake.args == []  # backed off


def test_a_wrong_tsig_key_is_a_dns_failure_and_no_secret_is_ever_shown(tmp_path: Path) -> None:
    r, _, fake, seen = _dns_loop(tmp_path, [wild("w", "*.wild.example.com"), app("a", "a.example.com")])
    r.issuer.nginx_addr = None
    # certbot quoting the secret (it does not; a plugin might): the kept output and everything after it
    fake.fail["wildcard.wild.example.com"] = (
        f"Encountered error adding TXT record: The peer didn't like the signature we sent (key {SECRET})\n" + TAIL)
    r.run_pass()
    (failed,) = [e for e in seen.events if e.kind is Kind.CERT_FAILED]
    assert failed.site == "wildcard.wild.example.com" and failed.details["failure"] == "dns"
    assert "wrong secret in" in failed.message and SECRET not in failed.message
    assert Kind.CERT_ISSUED in seen.kinds("a.example.com")  # the other site is fine
    ledger = (r.settings.state_dir / "ledger.json").read_text()
    logs = "".join(p.read_text() for p in (r.settings.state_dir / "certbot-logs").rglob("*.log"))
    assert "peer didn't like" in ledger and SECRET not in ledger
    assert "peer didn't like" in logs and SECRET not in logs
    assert SECRET not in json.dumps([str(e.details) + e.message for e in seen.events])


def test_a_provider_image_gets_a_runner_of_its_own() -> None:
    made: list[tuple[str, int]] = []

    class Run:
        def __init__(self, image: str) -> None:
            self.image, self.closed = image, False

        def run(self, args: list[str], environment: Any, site: str) -> RunResult:
            return RunResult(0, self.image)

        def warm(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    default = Run("certbot/certbot")

    def make_run(image: str, number: int) -> Run:
        made.append((image, number))
        return Run(image)

    images = runner.Images(default, "certbot/certbot", make_run)
    assert images.for_image("certbot/certbot") is default
    cf = images.for_image("certbot/dns-cloudflare")
    assert images.for_image("certbot/dns-cloudflare") is cf and made == [("certbot/dns-cloudflare", 2)]
    assert images.run([], {}, "x").output == "certbot/certbot"
    images.close()
    assert default.closed and isinstance(cf, Run) and cf.closed


# -- the certbot container's mounts ------------------------------------------------------------
class _Api:
    def __init__(self, mounts: list[dict[str, Any]]) -> None:
        self.mounts = mounts

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"Mounts": self.mounts}


def test_the_credentials_and_nothing_else_of_the_sidecars_reach_certbot_read_only(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sidecar.adapters.docker_api import Docker
    from sidecar.engine import startup

    docker = Docker.__new__(Docker)
    docker._client = SimpleNamespace(api=_Api([  # type: ignore[attr-defined]
        {"Type": "volume", "Name": "certs", "Destination": "/etc/letsencrypt"},
        {"Type": "bind", "Source": "/srv/secrets/cloudflare.ini", "Destination": "/run/secrets/cloudflare.ini"},
        {"Type": "bind", "Source": "/srv/secrets/alerts", "Destination": "/run/secrets/alerts"},
        {"Type": "bind", "Source": "/srv/deep.ini", "Destination": "/run/secrets/sub/deep.ini"},
    ]))
    found = startup._credentials(docker, "me", Path("/run/secrets"))
    assert found == {"/srv/secrets/cloudflare.ini": {"bind": "/run/secrets/cloudflare.ini", "mode": "ro"}}
    docker._client = SimpleNamespace(api=_Api([  # type: ignore[attr-defined]
        {"Type": "volume", "Name": "dns-credentials", "Destination": "/run/secrets", "RW": False}]))
    assert startup._credentials(docker, "me", Path("/run/secrets")) == {
        "dns-credentials": {"bind": "/run/secrets", "mode": "ro"}}
    docker._client = SimpleNamespace(api=_Api([]))  # type: ignore[attr-defined]
    assert startup._credentials(docker, "me", Path("/run/secrets")) == {}


def test_check_runs_the_credentials_preflight_of_every_dns01_site(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar.ops import cli

    for key in list(os.environ):
        if key.startswith(("ACME_", "DNS_", "CERTBOT_IMAGE_", "SITES_", "STATE_", "DOCKER_")):
            monkeypatch.delenv(key, raising=False)
    creds = tmp_path / "secrets"
    creds.mkdir()
    _write(creds / "rfc2136.ini", RFC2136_INI, 0o640)
    sites = tmp_path / "sites.yml"
    sites.write_text("sites:\n"
                     "  - {domains: ['*.w.example.com'], upstream: http://10.0.0.5:80, challenge: dns-01}\n"
                     "  - {domains: [h.example.com], upstream: http://10.0.0.5:80}\n")
    for key, value in {"SITES_FILE": str(sites), "STATE_DIR": str(tmp_path), "DOCKER_HOST": "tcp://127.0.0.1:1",
                       "ACME_DNS_PROVIDER": "rfc2136", "DNS_CREDENTIALS_DIR": str(creds)}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["check", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [s["site"] for s in doc["sites"]] == ["wildcard.w.example.com", "h.example.com"]
    (problem,) = doc["problems"]
    assert problem.startswith("site wildcard.w.example.com: DNS-01 via rfc2136: credentials file") \
        and "is not private (mode 0640" in problem and SECRET not in problem
    os.chmod(creds / "rfc2136.ini", 0o600)
    cli.main(["check", "--json"])
    assert json.loads(capsys.readouterr().out)["problems"] == []
