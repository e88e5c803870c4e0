"""No input reaches nginx unvalidated (issue 5): property tests against a real ``nginx -t``.

Arbitrary label values (domains, port, scheme, network, every per-site option and
``acme.header.*``) and sites-file entries go through the real parsing
(``labels.site_from_container``, ``sitesfile.parse_sites_file``) and rendering
(``render.render_all``). Each input must either be rejected with a one-line
``Problem`` naming its source, or yield config that

- passes ``nginx -t`` in a real nginx container (local/nginx:stable, started once),
  with a real certificate made by ``cryptography``, and
- means what was asked: ``server_name`` is exactly the (normalised) names asked for,
  ``proxy_pass`` goes to the asked scheme, and the upstream to the container's address
  on the asked network and the asked port; each header and option appears as asked;
  nothing else (no directive the template does not have, no extra server or location).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import docker
import idna
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.sources import labels, sitesfile

from sidecar.core import options, render
from sidecar.core.model import Certificate, ContainerInfo, Problem, Site, SourceKind, Upstream

from .stack import IMAGES

PREFIX = "acme"
NETWORKS = {"net_a": "10.1.0.5", "net_b": "10.2.0.7", "net_c": "10.3.0.9"}
NGINX_NETWORKS = ["net_a", "net_b"]  # net_c: the container is on it, nginx is not
MOUNT = "/t"
RESOLVABLE = {"app": "10.0.0.1", "app_1.internal": "10.0.0.2"}
SNIPPETS = "/etc/nginx/sidecar-snippets"

PAYLOADS = [
    ";", "}", "{", "\n", "\r\n", "$host", "${x}", '"', "'", "\\", "`", "#", "\x00", "\u202e", " ",
    "a;b", 'x" always; return 200 "pwned', "x } server { listen 8080; } #", "x\nreturn 200 pwned;",
    "x\r\nproxy_pass http://evil;", "$(id)", "../../etc/passwd", "a" * 5000, "é" * 300,
    "default-src 'self'; img-src *", "ünïcödé.example", "xn--nxasmq6b.com", "bücher.example", "ДОМЕН.рф",
    "例え.jp", "a.b.c.", "a..b",
    "*.example.com", "1.2.3.4", "[::1]", "exa mple.com", "-a.example.com", "a-.example.com",
    "example", "localhost.", "EXAMPLE.COM", "a." * 130 + "com", "x" * 64 + ".com", "0", "-1", "65536",
    "80 ", " 443", "0x50", "８０", "1e3", "http", "HTTPS", "ftp", "https://x", "net_a", "net_c",
    "net_a;", "none", "on", "off", "true", "10m", "10M", "65g", "1g;", "www-to-apex", "apex-to-www",
    "modern", "intermediate;", "max-age=31536000; includeSubDomains; preload", "63072000; preload",
    "rsa", "ecdsa ", "tlsserver", "shortlived;",
]


# -- a long-lived nginx to run `nginx -t` in -------------------------------------------------
class NginxBox:
    def __init__(self, root: Path, container: Any, cert_paths: tuple[str, str]) -> None:
        self.root = root
        self.container = container
        self.cert_paths = cert_paths
        self.case = root / "case"
        self.case.mkdir()
        version = self.exec("nginx", "-V")[1]
        code, v6 = self.exec("cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6")
        self.traits = render.traits_from(version, v6 if code == 0 else "")
        (root / "nginx.conf").write_text(
            "error_log stderr notice;\npid /tmp/nginx-t.pid;\nevents {}\n"
            f"http {{\n    include /etc/nginx/mime.types;\n    include {MOUNT}/case/*.conf;\n}}\n"
        )
        self.tests = 0

    def exec(self, *cmd: str) -> tuple[int, str]:
        code, out = self.container.exec_run(list(cmd))
        return int(code), out.decode("utf-8", "replace")

    def nginx_t(self, files: dict[str, str]) -> tuple[int, str]:
        for old in self.case.iterdir():
            old.unlink()
        for name, content in files.items():
            (self.case / name).write_text(content, encoding="utf-8", errors="surrogateescape")
        self.tests += 1
        return self.exec("nginx", "-t", "-c", f"{MOUNT}/nginx.conf")


def _certificate(root: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "injection.test")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("injection.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (root / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return f"{MOUNT}/fullchain.pem", f"{MOUNT}/privkey.pem"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxBox]:
    client = docker.from_env()
    root = Path(tmp_path_factory.mktemp("injection"))
    root.chmod(0o755)
    cert_paths = _certificate(root)
    container = client.containers.run(
        IMAGES["NGINX_IMAGE"], ["sleep", "infinity"], entrypoint=[], detach=True, network_mode="none",
        # nginx -t resolves upstream host names: these are the ones the sites-file examples use.
        extra_hosts=dict(RESOLVABLE),
        volumes={str(root): {"bind": MOUNT, "mode": "ro"}}, labels={"e2e.injection": "1"},
    )
    try:
        b = NginxBox(root, container, cert_paths)
        code, out = b.nginx_t({"sidecar-00-global.conf": render.render_global("/var/www/acme", b.traits)})
        assert code == 0, out
        yield b
        print(f"nginx -t runs: {b.tests}")
    finally:
        container.remove(force=True)
        client.close()
        shutil.rmtree(root, ignore_errors=True)


# -- a small nginx config reader (enough for the files the sidecar writes) ------------------------
# As nginx reads it: quoted strings, comments from a "#" that starts a token, braces, words.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[{};]|[^\s{};"\']+')


def parse_conf(text: str) -> list[Any]:
    """[(directive, [args], [children] or None)], comments dropped, quotes removed."""
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith("#")]
    pos = 0

    def block() -> list[Any]:
        nonlocal pos
        out: list[Any] = []
        words: list[str] = []
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok == ";":
                assert words, "empty statement"
                out.append((words[0], words[1:], None))
                words = []
            elif tok == "{":
                assert words, "block without a name"
                out.append((words[0], words[1:], block()))
                words = []
            elif tok == "}":
                assert not words, f"unterminated statement {words}"
                return out
            else:
                words.append(tok[1:-1] if tok[0] in "\"'" else tok)
        assert not words, f"unterminated statement {words}"
        return out

    tree = block()
    assert pos == len(tokens), "unbalanced braces"
    return tree


def walk(tree: list[Any]) -> Iterator[tuple[str, list[str], list[Any] | None]]:
    for name, args, children in tree:
        yield name, args, children
        if children is not None:
            yield from walk(children)


# -- the oracle ----------------------------------------------------------------------------------
def asked_names(raw: str) -> set[str]:
    out = set()
    for part in (p for p in re.split(r"[,\s]+", raw) if p):
        name = part[:-1] if part.endswith(".") else part
        wild, name = (name[:2], name[2:]) if name.startswith("*.") else ("", name)
        out.add(render.server_name(wild + (name.lower() if name.isascii() and "xn--" not in name.lower()
                                           else idna.encode(name, uts46=True).decode("ascii"))))
    return out


def check_problem(problem: Problem, source_prefix: str) -> None:
    text = str(problem)
    assert "\n" not in text and "\r" not in text, repr(text)
    assert text.isprintable(), repr(text)
    assert problem.source.startswith(source_prefix), problem
    assert len(text) < 2000, len(text)


def render_and_test(box: NginxBox, site: Site) -> tuple[str, list[Any]] | None:
    """The site's file and its parse; None when nginx -t refused an upstream host it cannot resolve
    (the sidecar then holds that one site back and logs nginx's line; see test_nginx/apply)."""
    cert = Certificate(
        name=site.name, names=frozenset(site.domains), not_before=datetime(2026, 1, 1, tzinfo=timezone.utc),
        not_after=datetime(2026, 4, 1, tzinfo=timezone.utc), issuer="Injection CA", key_type="ecdsa",
        serial=0x1234, fullchain_path=box.cert_paths[0], privkey_path=box.cert_paths[1],
    )
    # A plain site beside it shares the 443 listener (a "modern" site then gets the TLS 1.3 guard).
    companion = Site(("companion.injection.test",), (Upstream("http", "10.9.9.9", 80),), "companion",
                     SourceKind.FILE)
    certs = {site.name: cert, companion.name: replace(cert, name=companion.name, names=frozenset(companion.domains))}
    files = render.render_all([site, companion], certs, "/var/www/acme", box.traits, profile="intermediate",
                              snippets_dir=SNIPPETS)
    assert set(files) == {render.GLOBAL_FILE, render.POOLS_FILE, render.site_filename(site.name),
                          render.site_filename(companion.name)}
    code, out = box.nginx_t(files)
    host = site.upstreams[0].host
    if code != 0 and host.lower() not in RESOLVABLE and ":" not in host and not host.replace(".", "").isdigit():
        # (the upstream blocks are in the pools file: the sidecar holds back the sites that use that block)
        assert re.search(rf'\[emerg\].* host not found in upstream "{re.escape(host)}:{site.upstreams[0].port}" '
                         rf"in {MOUNT}/case/{re.escape(render.POOLS_FILE)}:", out), out
        return None
    assert code == 0, f"nginx -t failed for {site!r}:\n{out}\n{files[render.site_filename(site.name)]}"
    assert "[warn]" not in out, out
    # The site's server block(s), and the one upstream block of the pools file it proxies to.
    block = render.pool_blocks(files[render.POOLS_FILE])[render.pool_name(site)][2]
    text = files[render.site_filename(site.name)] + block
    return text, parse_conf(text)


# Directives the shipped site template can produce (anything else came from an input).
TEMPLATE_DIRECTIVES = {
    "upstream", "server", "keepalive", "listen", "http2", "server_name", "ssl_certificate", "ssl_certificate_key",
    "ssl_protocols", "ssl_ciphers", "ssl_ecdh_curve", "ssl_prefer_server_ciphers", "ssl_session_tickets",
    "ssl_stapling", "ssl_stapling_verify", "add_header", "client_max_body_size", "location", "proxy_pass",
    "proxy_http_version", "proxy_set_header", "proxy_ssl_server_name", "proxy_ssl_name", "include", "return",
    "ssl_conf_command", "if",
}


def check_meaning(site: Site, text: str, tree: list[Any], asked: dict[str, str], traits: render.NginxTraits) -> None:
    everything = list(walk(tree))
    unknown = {name for name, _, _ in everything} - TEMPLATE_DIRECTIVES
    assert not unknown, f"directives no template line makes: {unknown}"
    for line in text.splitlines():
        assert line.isprintable() or line == "", repr(line)

    servers = [c for n, _, c in tree if n == "server"]
    redirects = [s for s in servers if any(n == "return" for n, _, _ in s)]
    main = [s for s in servers if s not in redirects]
    assert len(main) == 1, f"{len(main)} main server blocks"
    names = [a for s in servers for n, args, _ in s if n == "server_name" for a in args]
    assert sorted(names) == sorted(render.server_name(d) for d in site.domains), names
    assert set(names) == asked_names(asked["domains"])
    # a host name, or a wildcard's one-label expression (DNS-01 sites only)
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|~\^\[\^\.\]\+(\\\.[a-z0-9-]+)+\$", n) for n in names), names
    if any(d.startswith("*.") for d in site.domains):
        assert (site.options.challenge or "http-01") == "dns-01", site.options
    # Every return is a redirect server's 308 to one of the site's names, or the TLS 1.3-only guard.
    for server in servers:
        for n, args, children in server:
            if n == "return":
                assert len(args) == 2 and args[0] == "308", args
                assert re.fullmatch(r"https://([a-z0-9.-]+)\$request_uri", args[1]), args
                assert args[1][len("https://"):-len("$request_uri")] in site.domains, args
            elif n == "if":
                assert args == ["($ssl_protocol", "!=", "TLSv1.3", ")"], args
                assert children == [("return", ["421"], None)], children
    assert sum(1 for n, _, _ in everything if n == "return") == len(redirects) + sum(
        1 for n, _, _ in everything if n == "if")

    upstreams = [(args, c) for n, args, c in tree if n == "upstream"]
    assert len(upstreams) == 1
    up_name, up_body = upstreams[0][0][0], upstreams[0][1]
    servers_up = [args[0] for n, args, _ in up_body if n == "server"]
    network = asked.get("network", "").strip() or sorted(set(NETWORKS) & set(NGINX_NETWORKS))[0]
    port = int(asked["port"].strip()) if "port" in asked else 80
    assert servers_up == [f"{NETWORKS[network]}:{port}"], servers_up

    locations = [c for n, args, c in walk(main[0]) if n == "location"]
    assert len(locations) == 1
    scheme = asked.get("scheme", "http").strip().lower()
    assert [a for n, a, _ in locations[0] if n == "proxy_pass"] == [[f"{scheme}://{up_name}"]]

    headers = {args[0]: args[1] for n, args, _ in main[0] if n == "add_header"}
    for key, value in asked.items():
        if key.startswith("header."):
            assert headers.get(key[len("header."):]) == value.strip(), (key, headers)
    o = site.options
    if o.hsts:
        assert headers["Strict-Transport-Security"] == o.hsts.header
    else:
        assert "Strict-Transport-Security" not in headers
    # HTTP/3 only when asked (and this nginx has the module): a QUIC listener and Alt-Svc, else neither
    quic = [a for n, a, _ in main[0] if n == "listen" and "quic" in a]
    if o.http3 and traits.http3:
        assert quic and headers.get("Alt-Svc") == 'h3=":443"; ma=86400', (quic, headers)
    else:
        assert not quic and "Alt-Svc" not in headers, (quic, headers)
    bodies = [a for n, a, _ in main[0] if n == "client_max_body_size"]
    assert bodies == ([[o.max_body_size]] if o.max_body_size else [])
    if "max_body_size" in asked:
        assert o.max_body_size == asked["max_body_size"].strip().lower()
    includes = [a[0] for n, a, _ in main[0] if n == "include"]
    assert includes == [f"{SNIPPETS}/{site.name}/*.conf"], includes
    # the group decides who may share the site (it is not part of nginx's config)
    if "group" in asked:
        assert site.owner is not None and (site.owner.kind.value, site.owner.name) == ("group", asked["group"].strip())


def check_label_case(box: NginxBox, given_labels: dict[str, str]) -> None:
    c = ContainerInfo(id="c" * 64, name="victim", labels={f"{PREFIX}.{k}": v for k, v in given_labels.items()},
                      networks=dict(NETWORKS), exposed_ports=(), created="000000000001")
    result = labels.site_from_container(c, PREFIX, NGINX_NETWORKS)
    if isinstance(result, Problem):
        check_problem(result, "container victim")
        return
    assert isinstance(result, Site), result
    rendered = render_and_test(box, result)
    assert rendered is not None
    check_meaning(result, *rendered, given_labels, box.traits)


# -- strategies ----------------------------------------------------------------------------------
payload = st.sampled_from(PAYLOADS)
valid_domain = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.(demo\.test|example\.com|xn--p1ai)", fullmatch=True)
domain_like = st.one_of(valid_domain, valid_domain.map(str.upper), valid_domain.map(lambda d: d + "."),
                        payload, st.text(max_size=20))
domains_value = st.one_of(
    st.lists(domain_like, min_size=1, max_size=4).flatmap(
        lambda ds: st.sampled_from([", ", ",", " ", "\n", ";"]).map(lambda sep: sep.join(ds))),
    payload, st.text(max_size=50),
)


def maybe(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), strategy)


def choice_or_junk(*values: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(values), payload, st.text(max_size=20))


VALID_OPTIONS: dict[str, list[str]] = {
    "port": ["8080", "5678", " 443 ", "1", "65535"],
    "scheme": ["http", "https", "HTTPS", " http "],
    "network": ["net_a", "net_b", " net_b "],
    "tls": ["intermediate", "modern", "MODERN"],
    "hsts": ["off", "on", "31536000", "63072000; includeSubDomains", "max-age=63072000; includeSubDomains; preload"],
    "max_body_size": ["0", "10m", "512K", "1g", "64g"],
    "redirect": ["www-to-apex", "apex-to-www"],
    "websocket": ["on", "off", "true", "0"],
    "http3": ["on", "off", "ON", "no"],
    "key_type": ["ecdsa", "rsa"],
    "profile": ["classic", "tlsserver", "shortlived"],
    "challenge": ["http-01", "dns-01", "DNS-01"],
    "dns_provider": ["rfc2136", "cloudflare:work"],
    "group": ["billing", " team-a ", "web_1.eu"],
    "header.X-Frame-Options": ["DENY", "SAMEORIGIN"],
    # "default-src 'self'; img-src *" is refused: options forbids ' and ; in header values (see the report)
    "header.Content-Security-Policy": ["default-src https:", "upgrade-insecure-requests"],
    "header.X-A.b_c~1": ["a=1, b=2", "(x)"],
}
apex = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.(demo\.test|example\.com)", fullmatch=True)
valid_domains = st.one_of(
    st.lists(valid_domain, min_size=1, max_size=3, unique=True).map(", ".join),
    apex.map(lambda a: f"{a}, www.{a}"),  # so the redirect option can apply
    apex.map(lambda a: f"WWW.{a.upper()}. {a}"),
    apex.map(lambda a: f"{a}, *.{a}"),  # wildcards: only with dns-01 and a provider
    valid_domain.map(lambda d: f"*.{d}"),
    st.sampled_from(["bücher.example, www.bücher.example", "xn--nxasmq6b.com", "ДОМЕН.рф"]),
)
valid_label_sets = st.fixed_dictionaries(
    {"domains": valid_domains}, optional={k: st.sampled_from(v) for k, v in VALID_OPTIONS.items()})
junk = st.one_of(payload, st.text(max_size=30), st.text(st.characters(codec="ascii"), max_size=30))


def _fuzz_one(base: dict[str, str], key: str, value: str) -> dict[str, str]:
    return {**base, key: value}


# Mostly valid label sets with one value replaced by junk (so most examples reach nginx -t),
# valid ones, and fully random ones.
label_sets = st.one_of(
    valid_label_sets,
    valid_label_sets,
    st.builds(_fuzz_one, valid_label_sets, st.sampled_from(["domains", *VALID_OPTIONS]), junk),
    st.fixed_dictionaries({"domains": domains_value},
                          optional={k: st.one_of(st.sampled_from(v), junk) for k, v in VALID_OPTIONS.items()}),
)
header_sets = st.one_of(
    st.just({}),
    st.dictionaries(
        st.one_of(st.sampled_from(["X-Test", "Referrer-Policy", "Permissions-Policy", "Server", "x-lower"]),
                  payload, st.text(max_size=12)),
        st.one_of(st.sampled_from(["no-referrer", "a=1, b=2", "geolocation=()"]), payload, st.text(max_size=30)),
        max_size=3,
    ),
)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(label_sets, header_sets)
@example({"domains": "a.demo.test, www.a.demo.test", "redirect": "www-to-apex", "hsts": "off",
          "max_body_size": "10M", "header.X-Frame-Options": "DENY"}, {"X-Test": "a=1, b=2"})
@example({"domains": "Bücher.Example., xn--nxasmq6b.com", "scheme": "HTTPS", "port": " 8443 ",
          "network": "net_b"}, {})
@example({"domains": "w.demo.test, *.w.demo.test", "challenge": "dns-01", "dns_provider": "rfc2136"}, {})
@example({"domains": "*.w.demo.test", "challenge": "http-01"}, {})
@example({"domains": "h.demo.test", "http3": "on", "tls": "modern"}, {"X-Test": "1"})
@example({"domains": "m.demo.test, www.m.demo.test", "tls": "modern", "redirect": "apex-to-www",
          "websocket": "off", "hsts": "max-age=63072000; includeSubDomains; preload"},
         {"Referrer-Policy": "no-referrer"})
def test_any_label_values_are_rejected_or_mean_what_was_asked(
    box: NginxBox, given_labels: dict[str, str], headers: dict[str, str]
) -> None:
    check_label_case(box, {**given_labels, **{f"header.{k}": v for k, v in headers.items()}})


INJECTIONS = [
    pytest.param({"domains": "a.demo.test; return 200 pwned"}, id="semicolon-in-domains"),
    pytest.param({"domains": "a.demo.test } server { listen 9999"}, id="braces-in-domains"),
    pytest.param({"domains": "a.demo.test\nreturn 200 pwned;"}, id="newline-in-domains"),
    pytest.param({"domains": "$host.demo.test"}, id="variable-in-domains"),
    pytest.param({"domains": '"a.demo.test"'}, id="quotes-in-domains"),
    pytest.param({"domains": "a" * 70 + ".demo.test"}, id="label-too-long"),
    pytest.param({"domains": ("a" * 60 + ".") * 5 + "test"}, id="name-too-long"),
    pytest.param({"domains": "*.demo.test"}, id="wildcard"),
    pytest.param({"domains": "127.0.0.1"}, id="ip"),
    pytest.param({"domains": "a.demo.test", "port": "80;return 200 x"}, id="semicolon-in-port"),
    pytest.param({"domains": "a.demo.test", "port": "８０"}, id="fullwidth-digits-in-port"),
    pytest.param({"domains": "a.demo.test", "scheme": "http://evil;#"}, id="scheme"),
    pytest.param({"domains": "a.demo.test", "network": "net_a\nreturn 200 x;"}, id="newline-in-network"),
    pytest.param({"domains": "a.demo.test", "header.X-Test": 'a" always; return 200 "pwned'}, id="quote-in-header"),
    pytest.param({"domains": "a.demo.test", "header.X-Test": "a\nreturn 200 pwned;"}, id="newline-in-header"),
    pytest.param({"domains": "a.demo.test", "header.X-Test": "$request_uri"}, id="variable-in-header"),
    pytest.param({"domains": "a.demo.test", "header.X-Test": "}"}, id="brace-in-header"),
    pytest.param({"domains": "a.demo.test", "header.X-Test": "v" * 5000}, id="long-header"),
    pytest.param({"domains": "a.demo.test", "header.X;Y": "v"}, id="semicolon-in-header-name"),
    pytest.param({"domains": "a.demo.test", "header.X Y": "v"}, id="space-in-header-name"),
    pytest.param({"domains": "a.demo.test", "header.$x": "v"}, id="variable-as-header-name"),
    pytest.param({"domains": "a.demo.test", "header.Strict-Transport-Security": "max-age=1"}, id="reserved-header"),
    pytest.param({"domains": "a.demo.test", "hsts": "63072000; includeSubDomains\"; return 200 x"}, id="hsts"),
    pytest.param({"domains": "a.demo.test", "max_body_size": "10m; return 200 x"}, id="max-body-size"),
    pytest.param({"domains": "a.demo.test", "tls": "modern; ssl_protocols SSLv3"}, id="tls"),
    pytest.param({"domains": "a.demo.test", "profile": "x;y"}, id="profile"),
    pytest.param({"domains": "a.demo.test", "evil": "x"}, id="unknown-label"),
    pytest.param({"domains": "a.demo.test", "header.X-Ünï": "v"}, id="unicode-header-name"),
    pytest.param({"domains": "a.demo.test", "header.X-Test": "ünïcödé"}, id="unicode-header-value"),
    pytest.param({"domains": "ünïcödé.demo.test, ДОМЕН.рф, 例え.jp"}, id="unicode-domains"),
    pytest.param({"domains": "a.demo.test\u202e"}, id="bidi-override"),
    pytest.param({"domains": "a.demo.test\x00b.demo.test"}, id="nul"),
]


@pytest.mark.parametrize("given_labels", INJECTIONS)
def test_injection_attempts_through_labels(box: NginxBox, given_labels: dict[str, str]) -> None:
    check_label_case(box, given_labels)


# -- the sites file --------------------------------------------------------------------------------
def check_file_case(box: NginxBox, entry: dict[str, Any]) -> None:
    text = yaml.safe_dump({"sites": [entry]}, allow_unicode=True)
    sites, problems = sitesfile.parse_sites_file(text, "/config/sites.yml")
    for p in problems:
        check_problem(p, "sites file /config/sites.yml entry 1")
    if not sites:
        assert problems
        return
    (site,) = sites
    assert len(site.upstreams) == 1
    up = site.upstreams[0]
    # The upstream is the URL asked for: scheme, host (lower-cased) and port, nothing else.
    raw = str(entry["upstream"]).strip()
    m = re.fullmatch(r"(https?)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::(\d+))?/?", raw, re.I)
    assert m, f"accepted an upstream the strict form rejects: {raw!r}"
    host, scheme = m.group(2).strip("[]").lower(), m.group(1).lower()
    assert up.scheme == scheme
    assert up.port == int(m.group(3) or (443 if scheme == "https" else 80))
    if ":" in host:
        assert ipaddress.ip_address(up.host) == ipaddress.ip_address(host)
    else:
        assert up.host.lower() == host
    rendered = render_and_test(box, site)
    if rendered is None:
        return
    tree = rendered[1]
    upstream_body = next(c for n, _, c in tree if n == "upstream")
    assert [a[0] for n, a, _ in upstream_body if n == "server"] == [
        (f"[{up.host}]" if ":" in up.host else up.host) + f":{up.port}"]
    names = [a for n, args, _ in walk(tree) if n == "server_name" for a in args]
    domains = entry["domains"]
    asked = ", ".join(domains) if isinstance(domains, list) else str(domains)
    assert set(names) == asked_names(asked)


file_entries = st.fixed_dictionaries(
    {
        "domains": st.one_of(valid_domains, st.lists(valid_domain, min_size=1, max_size=3), domains_value,
                             st.lists(domain_like, min_size=1, max_size=3)),
        "upstream": st.one_of(
            st.sampled_from(["http://app:8080", "https://10.0.0.5", "http://[fd00::5]:81", "http://App_1.internal"]),
            st.sampled_from(["HTTP://APP:1", "https://app/", "http://10.0.0.7:65535", "https://[::1]"]),
            st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(["http", "https", "ftp", "HTTP"]),
                      st.one_of(payload, st.from_regex(r"[a-z0-9_.-]{1,20}", fullmatch=True)),
                      st.one_of(st.just(""), st.integers(-1, 70000).map(lambda p: f":{p}"), payload)),
            payload, st.text(max_size=30)),
    },
    optional={
        "hsts": st.one_of(choice_or_junk("off", "31536000"), st.booleans(), st.integers()),
        "max_body_size": st.one_of(choice_or_junk("10m", "0"), st.integers(-1, 10**12)),
        "websocket": st.one_of(st.booleans(), choice_or_junk("on", "off")),
        "http3": st.one_of(st.booleans(), choice_or_junk("on", "off")),
        "headers": st.one_of(header_sets, st.lists(payload, max_size=2), payload),
    },
)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(file_entries)
@example({"domains": ["a.demo.test"], "upstream": "http://app:8080\nreturn 200 x;"})
@example({"domains": ["a.demo.test"], "upstream": "http://app:80;return"})
@example({"domains": ["a.demo.test"], "upstream": "http://ap\tp:80"})
@example({"domains": ["a.demo.test"], "upstream": "http://user:pw@app:80"})
@example({"domains": ["a.demo.test"], "upstream": "http://app:80/path"})
@example({"domains": ["a.demo.test"], "upstream": "http://[fd00::5]:81", "headers": {"X-Test": "a;b"}})
def test_any_sites_file_entry_is_rejected_or_means_what_was_asked(box: NginxBox, entry: dict[str, Any]) -> None:
    check_file_case(box, entry)


def test_the_oracle_knows_every_option(box: NginxBox) -> None:
    """Guard for this file: a new per-site option must be added to the strategies above."""
    covered = {"tls", "hsts", "max_body_size", "redirect", "websocket", "key_type", "profile", "challenge",
               "dns_provider", "http3"}
    assert set(options.OPTION_KEYS) <= covered, set(options.OPTION_KEYS) - covered
    assert set(labels.KNOWN_KEYS) <= {"domains", "port", "network", "scheme", "group"}
