"""Per-site options (labels, sites file), their rendering, detected nginx traits and templates."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from sidecar.core import options, settings
from sidecar.core.errors import ConfigError
from sidecar.sources.labels import site_from_container
from sidecar.core.model import Hsts, Problem, Site, SiteOptions
from sidecar.adapters.nginx import apply
from sidecar.core.render import (
    GLOBAL_FILE,
    NginxTraits,
    check_templates,
    listener_profile,
    render_all,
    render_global,
    render_site,
    traits_from,
)
from sidecar.sources.sitesfile import parse_sites_file

from .builders import assert_nginx_syntax_sane, cert, container, site

NETS = ["web"]
A = site("a.example.com", "www.a.example.com")
A_CERT = cert("a.example.com", "www.a.example.com")
PLAIN = NginxTraits()


def sane(text: str) -> str:
    """Balanced braces, every directive ends with ';', '{' or '}', comments are one line each."""
    assert_nginx_syntax_sane(text)
    return text


def with_options(s: Site, **kw: object) -> Site:
    return replace(s, options=SiteOptions(**kw))  # type: ignore[arg-type]


def from_labels(**labels: str) -> Site | Problem | None:
    named = {"acme." + k.replace("__", "."): v for k, v in labels.items()}
    return site_from_container(container("app", {"acme.domains": "a.example.com,www.a.example.com", **named}), "acme",
                               NETS)


# -- option values -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("off", None), ("OFF", None), (False, None), ("on", Hsts()), (True, Hsts()),
        ("63072000", Hsts()), (63072000, Hsts()), ("max-age=300", Hsts(300)), ("0", Hsts(0)),
        ("31536000; includeSubDomains", Hsts(31536000, True)),
        ("31536000;includesubdomains; preload", Hsts(31536000, True, True)),
        (" 126144000 ; includeSubDomains ", Hsts(126144000, True)),
    ],
    ids=["off", "off-upper", "yaml-off", "on", "yaml-on", "two-years", "yaml-int", "max-age-form", "zero-clears",
         "subdomains", "preload", "four-years-max"],
)
def test_hsts_values(raw: object, expected: Hsts | None) -> None:
    assert options.parse_hsts(raw) == expected


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("126144001", "4 years"), ("-1", "max-age in seconds"), ("1e9", "max-age in seconds"),
        ("63072000; preload", "preload needs includeSubDomains"),
        ("300; includeSubDomains; preload", "at least 31536000"),
        ("63072000; includeSubDomains; includeSubDomains", "twice"),
        ("63072000; always", "unknown flag"), ("63072000\"; evil", "max-age in seconds"), (None, "string"),
        ("9" * 200, "longer than 120"),
    ],
    ids=["too-long", "negative", "float", "preload-needs-subdomains", "preload-needs-a-year", "flag-twice",
         "unknown-flag", "quote", "none", "huge"],
)
def test_bad_hsts_values(raw: object, words: str) -> None:
    with pytest.raises(options.OptionError, match=re.escape(words)) as err:
        options.parse_hsts(raw)
    assert err.value.key == "hsts" and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("10m", "10m"), ("10M", "10m"), ("512k", "512k"), ("0", "0"), (0, "0"), ("64g", "64g"), ("1024", "1024")],
)
def test_max_body_size_values(raw: object, expected: str) -> None:
    assert options.parse_max_body_size(raw) == expected


@pytest.mark.parametrize("raw", ["65g", "10 m", "10mb", "1.5m", "-1", "", "10m;", "1t", True, None, "9" * 13])
def test_bad_max_body_size(raw: object) -> None:
    with pytest.raises(options.OptionError):
        options.parse_max_body_size(raw)


def test_choices_and_profile() -> None:
    assert options.parse_tls(" Modern ") == "modern"
    assert options.parse_key_type("RSA") == "rsa"
    assert options.parse_profile("shortlived") == "shortlived"
    assert options.parse_websocket("off") is False and options.parse_websocket(True) is True
    for parse, raw in [(options.parse_tls, "old"), (options.parse_tls, True), (options.parse_key_type, "dsa"),
                       (options.parse_profile, "-x"), (options.parse_profile, "A"), (options.parse_profile, "a" * 33),
                       (options.parse_websocket, "maybe")]:
        with pytest.raises(options.OptionError):
            parse(raw)


@pytest.mark.parametrize(
    ("domains", "redirect", "pairs"),
    [
        (("a.com", "www.a.com"), "www-to-apex", [("www.a.com", "a.com")]),
        (("www.a.com", "a.com"), "apex-to-www", [("a.com", "www.a.com")]),
        (("a.com", "www.a.com", "b.com", "www.b.com"), "www-to-apex", [("www.a.com", "a.com"), ("www.b.com", "b.com")]),
        (("a.com", "www.b.com"), "www-to-apex", []),
        (("a.com", "www.a.com"), None, []),
    ],
    ids=["www-to-apex", "apex-to-www", "two-pairs", "no-pair", "none"],
)
def test_redirect_pairs(domains: tuple[str, ...], redirect: str | None, pairs: list[tuple[str, str]]) -> None:
    assert options.redirect_pairs(domains, redirect) == pairs


def test_redirect_needs_both_names() -> None:
    with pytest.raises(options.OptionError, match="needs both"):
        options.parse_redirect("www-to-apex", ("a.com", "b.com"))
    with pytest.raises(options.OptionError, match="www-to-apex or apex-to-www"):
        options.parse_redirect("to-www", ("a.com", "www.a.com"))


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("X Frame", "DENY", "token"), ("X-$host", "1", "token"), ("X-'q", "1", "token"), ("", "1", "token"),
        ("-X", "1", "token"), ("X" * 65, "1", "token"), (5, "1", "token"),
        ("Strict-Transport-Security", "max-age=1", "hsts option"), ("connection", "close", "hop-by-hop"),
        ("X-A", "", "empty"), ("X-A", 'a"b', "'\"'"), ("X-A", "$host", "'$'"),
        ("X-A", "a\\b", "'\\\\'"), ("X-A", "a\nb", "non-printable"),
        ("X-A", "caf\u00e9", "non-printable"), ("X-A", "x" * 1025, "longer"), ("X-A", None, "string"),
        ("X-A", ["a"], "string"),
    ],
    ids=["space", "dollar", "quote", "empty-name", "leading-dash", "long-name", "int-name", "hsts", "hop-by-hop",
         "empty", "dquote", "variable", "backslash", "newline", "non-ascii", "long", "none",
         "list"],
)
def test_bad_headers(name: object, value: object, words: str) -> None:
    with pytest.raises(options.OptionError, match=re.escape(words)) as err:
        options.parse_header(name, value)
    assert err.value.key.startswith("header.") and "\n" not in str(err.value)


def test_good_headers_and_limits() -> None:
    assert options.parse_header("X-Frame-Options", " DENY ") == ("X-Frame-Options", "DENY")
    assert options.parse_header("Permissions-Policy", "geolocation=(), camera=()")[1] == "geolocation=(), camera=()"
    domains = ("a.com",)
    many = [(f"X-H{i}", "1") for i in range(options.MAX_HEADERS)]
    assert len(options.build({}, many, domains, str).headers) == options.MAX_HEADERS
    with pytest.raises(options.OptionError, match="more than 20"):
        options.build({}, many + [("X-One-More", "1")], domains, str)
    with pytest.raises(options.OptionError, match="twice"):
        options.build({}, [("X-A", "1"), ("x-a", "2")], domains, str)


def test_build_records_where_each_option_came_from() -> None:
    o = options.build({"tls": "modern", "hsts": "off"}, [("X-A", "1")], ("a.com",), lambda k: f"label acme.{k}")
    assert o == SiteOptions(tls="modern", hsts=None, headers=(("X-A", "1"),), origins=(
        ("tls", "label acme.tls"), ("hsts", "label acme.hsts"), ("header.X-A", "label acme.header.X-A")))
    assert o.origin("tls") == "label acme.tls" and o.origin("websocket") == "default"
    assert options.build({}, [], ("a.com",), str) == SiteOptions()


# -- labels and the sites file ---------------------------------------------------------------------------

def test_labels_become_options() -> None:
    s = from_labels(tls="modern", hsts="31536000; includeSubDomains", max_body_size="20m", redirect="www-to-apex",
                    websocket="off", key_type="rsa", profile="tlsserver", header__X_Frame="DENY")
    assert isinstance(s, Site)
    assert s.options.tls == "modern" and s.options.hsts == Hsts(31536000, True)
    assert (s.options.max_body_size, s.options.redirect, s.options.websocket) == ("20m", "www-to-apex", False)
    assert (s.options.key_type, s.options.acme_profile) == ("rsa", "tlsserver")
    assert s.options.headers == (("X_Frame", "DENY"),)
    assert s.options.origin("profile") == "label acme.profile"
    assert s.options.origin("header.X_Frame") == "label acme.header.X_Frame"


def test_unlabelled_options_are_defaults() -> None:
    s = from_labels()
    assert isinstance(s, Site) and s.options == SiteOptions()


@pytest.mark.parametrize(
    ("labels", "label"),
    [
        ({"tls": "old"}, "acme.tls"), ({"hsts": "forever"}, "acme.hsts"), ({"max_body_size": "1x"}, "acme.max_body_size"),
        ({"redirect": "www-to-apex\nx"}, "acme.redirect"), ({"websocket": "perhaps"}, "acme.websocket"),
        ({"key_type": "dsa"}, "acme.key_type"), ({"profile": "Bad Profile"}, "acme.profile"),
        ({"header__X-A": "a$b"}, "acme.header.X-A"), ({"header__X A": "1"}, "acme.header.X A"),
        ({"header__": "1"}, "acme.header."), ({"tlsv": "modern"}, "acme.tlsv"),
    ],
    ids=["tls", "hsts", "size", "redirect-newline", "websocket", "key-type", "profile", "header-value",
         "header-name", "header-empty-name", "unknown"],
)
def test_bad_option_label_is_one_line_problem_naming_container_and_label(labels: dict[str, str], label: str) -> None:
    p = from_labels(**labels)
    assert isinstance(p, Problem)
    assert p.source == f"container app label {label}"
    assert len(str(p).splitlines()) == 1, str(p)


def test_redirect_label_needs_both_names() -> None:
    c = container("app", {"acme.domains": "a.example.com", "acme.redirect": "www-to-apex"})
    p = site_from_container(c, "acme", NETS)
    assert isinstance(p, Problem) and p.source == "container app label acme.redirect" and "www." in p.message


def test_sites_file_accepts_the_same_options() -> None:
    text = """
sites:
  - domains: [a.example.com, www.a.example.com]
    upstream: http://10.0.0.5:8080
    tls: modern
    hsts: off
    max_body_size: 0
    redirect: apex-to-www
    websocket: off
    key_type: rsa
    profile: shortlived
    headers: {X-Frame-Options: DENY, X-Count: 3}
"""
    sites, problems = parse_sites_file(text, "/config/sites.yml")
    assert problems == []
    o = sites[0].options
    assert (o.tls, o.hsts, o.max_body_size, o.redirect, o.websocket, o.key_type, o.acme_profile) == (
        "modern", None, "0", "apex-to-www", False, "rsa", "shortlived")
    assert o.headers == (("X-Frame-Options", "DENY"), ("X-Count", "3"))
    assert o.origin("hsts") == "sites file entry 1: hsts"
    assert o.origin("header.X-Count") == "sites file entry 1: headers.X-Count"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("tls: old", "tls: 'old' must be intermediate or modern"),
        ("hsts: '1; preload'", "hsts: preload needs"),
        ("headers: [X-A]", "headers: must be a mapping"),
        ("headers: {X-A: 'a$b'}", "headers.X-A: value contains '$'"),
        ("headers: {X-A: null}", "headers.X-A:"),
        ("redirect: www-to-apex", "redirect: www-to-apex needs both"),
        ("profile: [a]", "profile:"),
    ],
    ids=["tls", "hsts", "headers-list", "header-value", "header-null", "redirect", "profile-list"],
)
def test_bad_option_in_sites_file_names_file_and_entry(entry: str, words: str) -> None:
    text = ("sites:\n  - {domains: ok.example.com, upstream: 'http://ok'}\n"
            f"  - domains: b.example.com\n    upstream: http://b\n    {entry}\n")
    sites, problems = parse_sites_file(text, "/config/sites.yml")
    assert [s.name for s in sites] == ["ok.example.com"]
    assert len(problems) == 1
    assert problems[0].source == "sites file /config/sites.yml entry 2 (b.example.com)"
    assert words in problems[0].message, problems[0].message
    assert len(str(problems[0]).splitlines()) == 1


# -- rendering -------------------------------------------------------------------------------------------

def test_defaults_are_unchanged() -> None:
    text = sane(render_site(A, A_CERT, PLAIN))
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in text
    assert "client_max_body_size" not in text and "ssl_session_tickets" not in text
    assert "proxy_set_header Connection $sidecar_connection_upgrade;" in text
    assert "include " not in text  # snippets are off unless a directory is given
    assert re.findall(r"^\s*server_name (.*);$", text, re.M) == ["a.example.com www.a.example.com"]


@pytest.mark.parametrize(
    ("site_profiles", "default", "listener"),
    [
        ([], "intermediate", "intermediate"), ([], "modern", "modern"),
        ([None, "modern"], "intermediate", "intermediate"), (["modern", "modern"], "intermediate", "modern"),
        ([None], "modern", "modern"), ([None, "intermediate"], "modern", "intermediate"),
    ],
    ids=["no-sites", "no-sites-modern", "one-default", "all-modern", "global-modern", "one-loosens"],
)
def test_listener_offers_the_loosest_profile_any_site_needs(
    site_profiles: list[str | None], default: str, listener: str
) -> None:
    sites = [with_options(site(f"s{i}.example.com"), tls=p) for i, p in enumerate(site_profiles)]
    assert listener_profile(sites, default) == listener


def test_global_catch_all_carries_the_listener_tls_settings() -> None:
    modern = with_options(site("m.example.com"), tls="modern")
    certs_ = {A.name: A_CERT, "m.example.com": cert("m.example.com")}
    files = render_all([A, modern], certs_, "/w", PLAIN)
    g = sane(files[GLOBAL_FILE])
    catch_all = g.split("ssl_reject_handshake on;")[1]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in catch_all and "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:" in catch_all
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in catch_all
    assert "ssl_prefer_server_ciphers off;" in catch_all
    # the modern site refuses requests over TLS 1.2 itself; the intermediate one does not
    m = sane(files["sidecar-site-m.example.com.conf"])
    assert 'if ($ssl_protocol != "TLSv1.3") {\n        return 421;\n    }' in m
    assert "ssl_protocol " not in files["sidecar-site-a.example.com.conf"].replace("ssl_protocols", "")
    # all sites modern: the listener is modern and no per-request check is needed
    files = render_all([modern], certs_, "/w", PLAIN)
    assert "ssl_protocols TLSv1.3;" in files[GLOBAL_FILE] and "ssl_ciphers" not in files[GLOBAL_FILE]
    assert "$ssl_protocol" not in files["sidecar-site-m.example.com.conf"]
    old = traits_from("nginx version: nginx/1.20.2\nbuilt with OpenSSL 1.1.1w\n", "")
    assert "ssl_session_tickets off;" in render_global("/w", old)


def test_site_tls_option_overrides_the_global_profile() -> None:
    assert "ssl_protocols TLSv1.3;" in render_site(with_options(A, tls="modern"), A_CERT, PLAIN)
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in render_site(with_options(A, tls="intermediate"), A_CERT, PLAIN, "modern")
    assert "ssl_protocols TLSv1.3;" in render_site(A, A_CERT, PLAIN, "modern")
    files = render_all([A], {A.name: A_CERT}, "/w", PLAIN, "modern")
    assert "ssl_protocols TLSv1.3;" in files["sidecar-site-a.example.com.conf"]


@pytest.mark.parametrize(
    ("hsts", "line"),
    [
        (None, None),
        (Hsts(300), 'add_header Strict-Transport-Security "max-age=300" always;'),
        (Hsts(63072000, True, True),
         'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains; preload" always;'),
    ],
    ids=["off", "short", "preload"],
)
def test_hsts_rendering(hsts: Hsts | None, line: str | None) -> None:
    text = sane(render_site(with_options(A, hsts=hsts), A_CERT, PLAIN))
    found = re.findall(r"^\s*add_header Strict-Transport-Security.*$", text, re.M)
    assert [f.strip() for f in found] == ([line] if line else [])


def test_body_size_headers_and_websocket_off() -> None:
    s = with_options(A, max_body_size="10m", websocket=False, headers=(("X-Frame-Options", "DENY"), ("X-B", "b c")))
    text = sane(render_site(s, A_CERT, PLAIN))
    assert "client_max_body_size 10m;" in text
    assert 'add_header X-Frame-Options "DENY" always;' in text and 'add_header X-B "b c" always;' in text
    assert 'proxy_set_header Connection "";' in text and "Upgrade" not in text.split("location /")[1]


@pytest.mark.parametrize(
    ("redirect", "cert_names", "main", "moved"),
    [
        ("www-to-apex", ("a.example.com", "www.a.example.com"), "a.example.com", [("www.a.example.com", "a.example.com")]),
        ("apex-to-www", ("a.example.com", "www.a.example.com"), "www.a.example.com",
         [("a.example.com", "www.a.example.com")]),
        ("www-to-apex", ("www.a.example.com",), "www.a.example.com", []),
    ],
    ids=["www-to-apex", "apex-to-www", "target-not-yet-covered"],
)
def test_redirect_servers(redirect: str, cert_names: tuple[str, ...], main: str, moved: list[tuple[str, str]]) -> None:
    c = cert(*cert_names, lineage="a.example.com")
    text = sane(render_site(with_options(A, redirect=redirect), c, PLAIN))
    names = re.findall(r"^\s*server_name (.*);$", text, re.M)
    assert names == [main] + [a for a, _ in moved]
    assert re.findall(r"return 308 https://(\S+)\$request_uri;", text) == [b for _, b in moved]
    # every server carries the certificate, the TLS settings and HSTS
    assert text.count("ssl_certificate ") == text.count("ssl_protocols ") == text.count("Strict-Transport") == len(names)


def test_snippets_include_line() -> None:
    text = sane(render_site(A, A_CERT, PLAIN, snippets_dir="/etc/nginx/sidecar-snippets/"))
    assert "    include /etc/nginx/sidecar-snippets/a.example.com/*.conf;" in text
    # inside the site's main server, after its location
    main = text.split("\nserver {", 1)[1]
    assert main.index("location /") < main.index("include ") < main.rindex("}")


def test_header_comment_says_where_each_value_came_from() -> None:
    o = options.build({"tls": "modern", "max_body_size": "5m"}, [("X-A", "1")], A.domains, lambda k: f"label acme.{k}")
    s = replace(A, options=o)
    traits = traits_from("nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.5.4 30 Sep 2025\n", "0")
    text = render_site(s, A_CERT, traits, "intermediate", "/etc/nginx/sidecar-snippets")
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    rows = {m.group(1): (m.group(2), m.group(3)) for ln in header
            if (m := re.match(r"#\s{3}(\S+(?: \S+)?)\s+(.*?)  <- (.*)$", ln))}
    assert rows["tls"] == ("modern (TLS 1.3 only per request: other sites keep TLS 1.2 on the shared listener)",
                           "label acme.tls")
    assert rows["hsts"] == ("max-age=63072000", "default")
    assert rows["max_body_size"] == ("5m", "label acme.max_body_size")
    assert rows["websocket"] == ("on", "default")
    assert rows["header X-A"] == ("1", "label acme.header.X-A")
    assert rows["snippets"] == ("/etc/nginx/sidecar-snippets/a.example.com/*.conf", "SNIPPETS_DIR")
    assert rows["nginx"][1] == "detected (nginx -V)" and "nginx 1.26.3 with OpenSSL 3.5.4" in rows["nginx"][0]
    assert re.search(r"^#\s+tls\s+intermediate\s+<- default \(TLS_PROFILE\)$", render_site(A, A_CERT, PLAIN), re.M)


def test_comments_never_carry_control_characters() -> None:
    s = replace(A, source="container evil\nlisten 80;", notes=("x\r\ny",))
    text = render_site(s, A_CERT, PLAIN)
    assert "\nlisten 80;" not in text and "\r" not in text
    sane(text)


# -- detected traits -------------------------------------------------------------------------------------

NGINX_126 = ("nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.5.1 1 Jul 2025 (running with OpenSSL 3.5.4 30 Sep "
             "2025)\nTLS SNI support enabled\nconfigure arguments: --with-http_v2_module\n")


@pytest.mark.parametrize(
    ("output", "v6", "expected"),
    [
        (NGINX_126, "0\n", NginxTraits(True, True, True, False, "1.26.3", "3.5.4")),
        ("nginx version: nginx/1.25.1\nbuilt with OpenSSL 3.0.13 30 Jan 2024\n", "1",
         NginxTraits(False, False, True, False, "1.25.1", "3.0.13")),
        ("nginx version: nginx/1.25.0\nbuilt with OpenSSL 3.0.2\n", "0", NginxTraits(True, False, False, False,
                                                                                     "1.25.0", "3.0.2")),
        ("nginx version: nginx/1.23.1\nbuilt with OpenSSL 1.1.1n  15 Mar 2022\n", "",
         NginxTraits(False, False, False, True, "1.23.1", "1.1.1")),
        ("nginx version: nginx/1.23.2\nbuilt with OpenSSL 3.5.0\n", "", NginxTraits(False, True, False, False,
                                                                                    "1.23.2", "3.5.0")),
        ("nginx version: openresty/1.27.1.2\nbuilt with OpenSSL 3.4.1\n", "", NginxTraits(False, False, True, False,
                                                                                          "1.27.1", "3.4.1")),
        ("nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.5.1 (running with OpenSSL 3.4.0)\n", "",
         NginxTraits(False, False, True, False, "1.26.3", "3.4.0")),
        ("nginx version: nginx/1.27.0\nbuilt with BoringSSL\n", "", NginxTraits(False, False, True, False, "1.27.0", "")),
        ("", "", NginxTraits(False, False, False, True, "", "")),
    ],
    ids=["debian-trixie", "http2-directive-from-1.25.1", "1.25.0-listen-http2", "old-tickets-off",
         "tickets-rotated-from-1.23.2", "openresty", "running-older-openssl", "boringssl", "unknown"],
)
def test_traits_from_nginx_v(output: str, v6: str, expected: NginxTraits) -> None:
    assert traits_from(output, v6) == expected


def test_old_nginx_gets_listen_http2_and_no_tickets() -> None:
    traits = traits_from("nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.11\n", "0")
    text = sane(render_site(with_options(A, redirect="www-to-apex"), A_CERT, traits))
    assert "http2 on;" not in text
    assert text.count("listen 443 ssl http2;") == text.count("listen [::]:443 ssl http2;") == 2
    assert text.count("ssl_session_tickets off;") == 2
    g = sane(render_global("/w", traits))
    assert "listen 443 ssl http2 default_server;" in g and "listen [::]:443 ssl http2 default_server;" in g


# -- templates -------------------------------------------------------------------------------------------

def test_templates_dir_overrides_and_can_extend_the_shipped_template(tmp_path: Path) -> None:
    (tmp_path / "site.conf.j2").write_text(
        '{% extends "shipped/site.conf.j2" %}{% block location_extra %}\n        proxy_read_timeout 300s;'
        '{% endblock %}')
    text = sane(render_all([A], {A.name: A_CERT}, "/w", PLAIN, templates_dir=str(tmp_path))[
        "sidecar-site-a.example.com.conf"])
    assert "proxy_read_timeout 300s;" in text and "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert "site.conf.j2 from " + str(tmp_path) in text
    # the global template is still the shipped one
    assert "ssl_reject_handshake on;" in render_global("/w", PLAIN, str(tmp_path))
    (tmp_path / "global.conf.j2").write_text("# mine {{ webroot }}\n")
    assert render_global("/w", PLAIN, str(tmp_path)) == "# mine /w\n"
    check_templates(str(tmp_path))


@pytest.mark.parametrize(
    ("content", "words"),
    [("{% if %}", "site.conf.j2 line 1"), ("{{ no_such_thing }}", "no_such_thing")],
    ids=["syntax", "undefined"],
)
def test_broken_template_is_a_config_error_naming_templates_dir(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "site.conf.j2").write_text(content)
    with pytest.raises(ConfigError, match=f"TEMPLATES_DIR={tmp_path}.*{words}"):
        check_templates(str(tmp_path))
    with pytest.raises(ConfigError, match="TEMPLATES_DIR"):
        settings.load({"TEMPLATES_DIR": str(tmp_path)})


def test_templates_dir_must_hold_a_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds neither"):
        check_templates(str(tmp_path))
    with pytest.raises(ConfigError, match="not a directory"):
        check_templates(str(tmp_path / "missing"))


# -- settings --------------------------------------------------------------------------------------------

def test_settings() -> None:
    d = settings.load({})
    assert (d.tls_profile, d.snippets_dir, d.templates_dir) == ("intermediate", Path("/etc/nginx/sidecar-snippets"),
                                                                None)
    s = settings.load({"TLS_PROFILE": "Modern", "SNIPPETS_DIR": "/srv/snippets"})
    assert (s.tls_profile, s.snippets_dir) == ("modern", Path("/srv/snippets"))
    assert settings.load({"SNIPPETS_DIR": "off"}).snippets_dir is None
    for env in ({"TLS_PROFILE": "old"}, {"SNIPPETS_DIR": "relative"}, {"SNIPPETS_DIR": "/a b"},
                {"SNIPPETS_DIR": "/a;b"}, {"TEMPLATES_DIR": "relative"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            settings.load(env)


# -- a broken snippet holds back only its own site ---------------------------------------------------------

class FakeNginx:
    def __init__(self, conf_dir: Path, broken_snippet: str) -> None:
        self.conf_dir, self.broken = conf_dir, broken_snippet
        self.reloads = 0

    def test(self) -> tuple[bool, str]:
        for f in sorted(self.conf_dir.glob("sidecar-site-*.conf")):
            if f"include {self.broken.rsplit('/', 1)[0]}/*.conf;" in f.read_text():
                return False, (f'nginx: [emerg] unknown directive "oops" in {self.broken}:1\n'
                               "nginx: configuration file /etc/nginx/nginx.conf test failed")
        return True, "nginx: configuration file /etc/nginx/nginx.conf test is successful"

    def reload(self) -> tuple[bool, str]:
        self.reloads += 1
        return True, ""


@pytest.mark.parametrize("already_live", [False, True], ids=["new-site", "live-site"])
def test_a_broken_snippet_holds_back_only_its_site(tmp_path: Path, already_live: bool) -> None:
    b = site("b.example.com")
    certificates = {A.name: A_CERT, b.name: cert("b.example.com")}
    snippets = "/etc/nginx/sidecar-snippets"
    wanted = render_all([A, b], certificates, "/w", PLAIN, snippets_dir=snippets)
    if already_live:  # b was live before its snippet broke
        apply(tmp_path, wanted, FakeNginx(tmp_path, "/nowhere/x.conf"))
        wanted = render_all([A, b], {**certificates, A.name: cert("a.example.com", "www.a.example.com")}, "/w", PLAIN,
                            snippets_dir=snippets)
    rejected: list[str] = []
    result = apply(tmp_path, wanted, FakeNginx(tmp_path, f"{snippets}/b.example.com/e2e.conf"),
                   on_reject=lambda name, reason: rejected.append(f"{name}: {reason}"))
    assert rejected == [f'sidecar-site-b.example.com.conf: unknown directive "oops" in {snippets}/b.example.com/e2e.conf:1']
    assert result.reloaded
    assert (tmp_path / "sidecar-site-a.example.com.conf").read_text() == wanted["sidecar-site-a.example.com.conf"]
    assert not (tmp_path / "sidecar-site-b.example.com.conf").exists()


def test_hand_written_default_server_moves_the_sidecars_listeners_to_names() -> None:
    from sidecar.core.render import NginxTraits, render_global

    plain = render_global("/var/www/acme", NginxTraits())
    assert "listen 80 default_server;" in plain and "default_server;" in plain.split("listen 443")[1]
    taken = render_global("/var/www/acme", NginxTraits(), user_defaults=frozenset({80, 443}),
                          http_names=("a.example.com", "www.a.example.com"))
    assert "default_server" not in taken
    assert "server_name a.example.com www.a.example.com;" in taken


def test_content_security_policy_fits_in_a_header_label() -> None:
    csp = "default-src 'self'; img-src * data:; style-src 'self' 'unsafe-inline'"
    assert options.parse_header("Content-Security-Policy", csp) == ("Content-Security-Policy", csp)
