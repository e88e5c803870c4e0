from __future__ import annotations

import re
from dataclasses import replace

import pytest

from sidecar.core.model import Site, Upstream
from sidecar.core.render import (
    GLOBAL_FILE,
    MOZILLA_INTERMEDIATE_CIPHERS,
    POOLS_FILE,
    NginxTraits,
    pool_blocks,
    pool_name,
    render_all,
    render_global,
    render_pools,
    render_site,
    site_filename,
    upstream_name,
)

from .builders import assert_nginx_syntax_sane, cert, site

WEBROOT = "/var/www/acme"
PLAIN = NginxTraits()
FULL = NginxTraits(ipv6=True, post_quantum=True)
A = site("a.example.com", "www.a.example.com", upstream=("http", "172.18.0.5", 8080))
A_CERT = cert("a.example.com", "www.a.example.com")




def test_global_file_is_always_rendered() -> None:
    files = render_all([], {}, WEBROOT, PLAIN)
    assert list(files) == [GLOBAL_FILE]
    g = files[GLOBAL_FILE]
    assert re.search(r"location \^~ /\.well-known/acme-challenge/ \{\s+root /var/www/acme;", g)
    assert "return 308 https://$host$request_uri;" in g
    assert "listen 80 default_server;" in g
    assert "ssl_reject_handshake on;" in g
    assert "listen [::]" not in g
    assert_nginx_syntax_sane(g)


def test_global_file_with_ipv6() -> None:
    g = render_global("/srv/acme", NginxTraits(ipv6=True))
    assert "listen [::]:80 default_server;" in g and "listen [::]:443 ssl default_server;" in g
    assert "root /srv/acme;" in g
    assert_nginx_syntax_sane(g)


def test_site_file_only_once_its_lineage_exists() -> None:
    b = site("b.example.com")
    files = render_all([A, b], {"a.example.com": A_CERT}, WEBROOT, PLAIN)
    assert sorted(files) == [GLOBAL_FILE, POOLS_FILE, "sidecar-site-a.example.com.conf"]


def test_site_file_not_rendered_when_cert_covers_none_of_its_names() -> None:
    other = cert("other.example.com", lineage="a.example.com")
    assert list(render_all([A], {"a.example.com": other}, WEBROOT, PLAIN)) == [GLOBAL_FILE]


@pytest.mark.parametrize(
    ("cert_names", "server_name"),
    [
        (("a.example.com", "www.a.example.com"), "server_name a.example.com www.a.example.com;"),
        (("www.a.example.com", "a.example.com"), "server_name a.example.com www.a.example.com;"),
        (("a.example.com",), "server_name a.example.com;"),
        (("a.example.com", "www.a.example.com", "gone.example.com"),
         "server_name a.example.com www.a.example.com;"),
    ],
    ids=["exact", "cert-order-irrelevant", "name-being-added-waits", "dropped-name-not-served"],
)
def test_server_name_lists_only_names_the_certificate_covers(cert_names: tuple[str, ...], server_name: str) -> None:
    c = cert(*cert_names, lineage="a.example.com")
    text = render_all([A], {"a.example.com": c}, WEBROOT, PLAIN)["sidecar-site-a.example.com.conf"]
    assert re.findall(r"^\s*server_name .*$", text, re.M) == [f"    {server_name}"]


def test_site_file_contents() -> None:
    text = render_site(A, A_CERT, PLAIN)
    assert "ssl_certificate /etc/letsencrypt/live/a.example.com/fullchain.pem;" in text
    assert "ssl_certificate_key /etc/letsencrypt/live/a.example.com/privkey.pem;" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert f"ssl_ciphers {MOZILLA_INTERMEDIATE_CIPHERS};" in text
    assert MOZILLA_INTERMEDIATE_CIPHERS == (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    )
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in text
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in text
    assert "listen 443 ssl;" in text and "http2 on;" in text
    assert "X25519MLKEM768" not in text
    assert "listen [::]:443" not in text
    assert "ssl_stapling" not in text
    assert f"proxy_pass http://{pool_name(A)};" in text
    assert not re.search(r"^upstream ", text, re.M)  # (the pools file has it)
    assert re.search(rf"upstream {pool_name(A)} {{\s+server 172\.18\.0\.5:8080;\s+keepalive 16;\s+}}",
                     render_pools([A]))
    assert "proxy_ssl_server_name" not in text
    assert_nginx_syntax_sane(text)


def test_post_quantum_and_ipv6() -> None:
    text = render_site(A, A_CERT, FULL)
    assert "ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;" in text
    assert "listen [::]:443 ssl;" in text
    assert_nginx_syntax_sane(text)
    assert "X25519MLKEM768" not in render_site(A, A_CERT, NginxTraits(ipv6=True))
    assert "listen [::]:443" not in render_site(A, A_CERT, NginxTraits(post_quantum=True))


@pytest.mark.parametrize("ocsp", [True, False], ids=["ocsp-url", "no-ocsp-url"])
def test_stapling_only_with_an_ocsp_url(ocsp: bool) -> None:
    text = render_site(A, cert("a.example.com", "www.a.example.com", ocsp=ocsp), PLAIN)
    assert ("ssl_stapling on;" in text) is ocsp
    assert ("ssl_stapling_verify on;" in text) is ocsp
    assert_nginx_syntax_sane(text)


def test_all_replicas_are_upstream_servers() -> None:
    s = replace(A, upstreams=(Upstream("https", "172.18.0.6", 8443), Upstream("https", "172.18.0.5", 8443),
                              Upstream("https", "fd00::7", 8443)))
    pools = render_pools([s])
    block = re.search(rf"upstream {pool_name(s)} \{{(.*?)\}}", pools, re.S)
    assert block is not None
    assert re.findall(r"server (\S+);", block.group(1)) == ["172.18.0.5:8443", "172.18.0.6:8443", "[fd00::7]:8443"]
    text = render_site(s, A_CERT, PLAIN)
    assert f"proxy_pass https://{pool_name(s)};" in text
    assert "proxy_ssl_server_name on;" in text
    assert_nginx_syntax_sane(text)
    assert_nginx_syntax_sane(pools)


def test_sites_with_the_same_servers_share_one_upstream_block() -> None:
    """nginx sets up every upstream block much as a server block, and resolves its host names at
    every load: at 10,000 sites on one backend, one block each tripled nginx's load."""
    web = [site(f"s{i}.example.com", upstream=("http", "app", 5678)) for i in range(3)]
    other = site("o.example.com", upstream=("http", "app", 5679))
    replicas = replace(site("r.example.com"), upstreams=(Upstream("http", "10.0.0.3", 80), Upstream("http", "10.0.0.2", 80)))
    same = replace(site("q.example.com"), upstreams=(Upstream("http", "10.0.0.2", 80), Upstream("http", "10.0.0.3", 80)))
    sites = [*web, other, replicas, same]
    files = render_all(sites, {s.name: cert(s.name) for s in sites}, WEBROOT, PLAIN)
    declared = re.findall(r"^upstream (\S+) \{", "\n".join(files.values()), re.M)
    assert sorted(declared) == sorted({pool_name(web[0]), pool_name(other), pool_name(replicas)})
    assert len(set(declared)) == 3  # the three web sites share one, the replicas in any order another
    assert pool_name(replicas) == pool_name(same)
    for s in sites:
        assert f"proxy_pass http://{pool_name(s)};" in files[site_filename(s.name)]
    assert_nginx_syntax_sane(files[POOLS_FILE])


def test_an_https_upstream_gets_a_pool_of_its_own() -> None:
    """A kept-alive TLS connection carries the SNI of the site that opened it: never another site's."""
    a = site("a.example.com", upstream=("https", "app", 443))
    b = site("b.example.com", upstream=("https", "app", 443))
    plain = site("c.example.com", upstream=("http", "app", 443))
    assert len({pool_name(a), pool_name(b), pool_name(plain)}) == 3


def test_pool_blocks_finds_each_block_and_its_lines() -> None:
    sites = [site("a.example.com", upstream=("http", "app", 1)), site("b.example.com", upstream=("http", "app", 2))]
    text = render_pools(sites)
    blocks = pool_blocks(text)
    assert set(blocks) == {pool_name(s) for s in sites}
    lines = text.splitlines()
    for name, (first, last, block) in blocks.items():
        assert lines[first - 1] == f"upstream {name} {{" and lines[last - 1] == "}"
        assert block == "\n".join(lines[first - 1:last]) + "\n"
    assert not (render_all([], {}, WEBROOT, PLAIN).keys() - {GLOBAL_FILE})  # no site live: no pools file


def test_modern_profile_has_no_cipher_list() -> None:
    text = render_site(A, A_CERT, PLAIN, profile="modern")
    assert "ssl_protocols TLSv1.3;" in text and "ssl_ciphers" not in text
    assert_nginx_syntax_sane(text)


def test_every_rendered_file_is_syntactically_sane() -> None:
    sites: list[Site] = [A, site("b.example.com", upstream=("https", "10.0.0.9", 443)),
                         site("xn--bcher-kva.example")]
    certificates = {"a.example.com": A_CERT, "b.example.com": cert("b.example.com", ocsp=True),
                    "xn--bcher-kva.example": cert("xn--bcher-kva.example", key_type="rsa")}
    for traits in (PLAIN, FULL):
        files = render_all(sites, certificates, WEBROOT, traits)
        assert len(files) == 5
        for text in files.values():
            assert_nginx_syntax_sane(text)


def test_upstream_names_never_collide() -> None:
    names = ["a-b.example.com", "a.b.example.com", "a-b-example.com", "ab.example.com"]
    assert len({upstream_name(n) for n in names}) == len(names)
    assert len({site_filename(n) for n in names}) == len(names)
    sites = [site(n) for n in names]
    https = [site(n, upstream=("https", "10.0.0.2", 443)) for n in names]  # (a pool each)
    assert len({pool_name(s) for s in https}) == len(names)


def test_upstream_name_is_a_valid_nginx_identifier() -> None:
    assert re.fullmatch(r"sidecar_[a-z0-9_-]+", upstream_name("xn--bcher-kva.a-b.example"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.example.com", "sidecar-site-a.example.com.conf"), ("xn--bcher-kva.example",
                                                            "sidecar-site-xn--bcher-kva.example.conf")],
    ids=["ascii", "punycode"],
)
def test_site_filename(name: str, expected: str) -> None:
    assert site_filename(name) == expected
    assert site_filename(name) != GLOBAL_FILE
