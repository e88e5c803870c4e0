"""HTTP/3 (issue 18): the acme.http3 option, the HTTP3/HTTP3_PORT settings and what is rendered."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sidecar.core import options, settings
from sidecar.core.errors import ConfigError
from sidecar.core.model import Problem, Site, SiteOptions
from sidecar.core.render import GLOBAL_FILE, Http3, NginxTraits, render_all, traits_from
from sidecar.sources.sitesfile import parse_sites_file

from .builders import assert_nginx_syntax_sane, cert, site
from .test_render_options import from_labels

WEBROOT = "/var/www/acme"
H3 = NginxTraits(http3=True)
A, B = site("a.example.com"), site("b.example.com")
CERTS = {"a.example.com": cert("a.example.com"), "b.example.com": cert("b.example.com")}


def with_h3(s: Site, on: bool | None) -> Site:
    return replace(s, options=replace(s.options, http3=on))


def test_detected_from_nginx_v() -> None:
    v = "nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.5.0\nconfigure arguments: --with-http_v2_module " \
        "--with-http_v3_module --with-stream"
    assert traits_from(v, "").http3
    assert not traits_from(v.replace(" --with-http_v3_module", ""), "").http3


def test_off_by_default_renders_no_quic() -> None:
    files = render_all([A, B], CERTS, WEBROOT, H3)
    assert not any("quic" in text or "Alt-Svc" in text for text in files.values())


def test_one_site_on_opens_the_shared_listener_and_advertises_only_itself() -> None:
    files = render_all([with_h3(A, True), B], CERTS, WEBROOT, H3, http3=Http3(port=8443))
    g, a, b = files[GLOBAL_FILE], files["sidecar-site-a.example.com.conf"], files["sidecar-site-b.example.com.conf"]
    assert g.count("quic reuseport") == 1 and "listen 443 quic reuseport default_server;" in g
    assert "listen 443 quic;" in a and "add_header Alt-Svc 'h3=\":8443\"; ma=86400' always;" in a
    assert "quic" not in b and "Alt-Svc" not in b
    for text in files.values():
        assert_nginx_syntax_sane(text)


def test_default_on_with_a_site_turning_it_off() -> None:
    files = render_all([A, with_h3(B, False)], CERTS, WEBROOT, NginxTraits(http3=True, ipv6=True),
                       http3=Http3(default=True))
    a, b = files["sidecar-site-a.example.com.conf"], files["sidecar-site-b.example.com.conf"]
    assert "listen [::]:443 quic;" in a and "h3=\":443\"" in a
    assert "Alt-Svc" not in b and "quic" not in b
    assert "listen [::]:443 quic reuseport default_server;" in files[GLOBAL_FILE]


def test_an_nginx_without_the_module_gets_none_and_says_why() -> None:
    files = render_all([with_h3(A, True)], CERTS, WEBROOT, NginxTraits(http3=False), http3=Http3(default=True))
    assert "listen 443 quic" not in files[GLOBAL_FILE]
    site_file = files["sidecar-site-a.example.com.conf"]
    assert "listen 443 quic" not in site_file and "Alt-Svc" not in site_file
    assert "off (this nginx has no HTTP/3 module)" in site_file


def test_a_hand_written_default_server_keeps_the_default() -> None:
    g = render_all([with_h3(A, True)], CERTS, WEBROOT, H3, user_defaults=frozenset({443}))[GLOBAL_FILE]
    assert "listen 443 quic reuseport;" in g


@pytest.mark.parametrize(("raw", "expected"), [("on", True), ("off", False), (True, True), ("no", False)])
def test_option_values(raw: object, expected: bool) -> None:
    assert options.parse_http3(raw) is expected


def test_label_sets_it_and_says_so_in_the_origin() -> None:
    s = from_labels(http3="on")
    assert isinstance(s, Site) and s.options.http3 is True and s.options.origin("http3") == "label acme.http3"
    unset = from_labels()
    assert isinstance(unset, Site) and unset.options.http3 is None
    bad = from_labels(http3="sometimes")
    assert isinstance(bad, Problem) and "acme.http3" in str(bad) and "on or off" in str(bad)


def test_settings() -> None:
    s = settings.load({"HTTP3": "on", "HTTP3_PORT": "8443"})
    assert (s.http3, s.http3_port) == (True, 8443)
    assert (settings.load({}).http3, settings.load({}).http3_port) == (False, 443)
    for env in ({"HTTP3": "maybe"}, {"HTTP3_PORT": "0"}, {"HTTP3_PORT": "44.3"}, {"HTTP3_PORT": "70000"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            settings.load(env)


def test_site_options_default_is_unset() -> None:
    assert SiteOptions().http3 is None


def test_sites_file_key() -> None:
    text = "sites:\n  - domains: [a.example.com]\n    upstream: http://10.0.0.5:8080\n    http3: on\n" \
           "  - domains: [b.example.com]\n    upstream: http://10.0.0.5:8080\n    http3: 'off'\n"
    sites, problems = parse_sites_file(text, "/config/sites.yml")
    assert problems == [] and [s.options.http3 for s in sites] == [True, False]
    assert sites[0].options.origin("http3") == "sites file entry 1: http3"
