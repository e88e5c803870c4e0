"""nginx config tokenizer, parser, includes and certificate demands (no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import nginxconf
from sidecar.core.errors import ConfigError, InputError
from sidecar.core.model import Hsts, Problem
from sidecar.adapters.nginx import install_snippets
from sidecar.core.nginxconf import (
    CertDemand,
    ConfSyntaxError,
    certificate_demands,
    conf_d_roots,
    default_server_ports,
    demands_from_files,
    listen_port,
    parse,
    parse_tree,
    relevant_change,
    snippet_files,
    tokenize,
)
from sidecar.core.render import MOZILLA_INTERMEDIATE_CIPHERS, NginxTraits, tls_profile

LE = "/etc/letsencrypt"


def words(text: str) -> list[str]:
    return [t.value for t in tokenize(text)]


# -- tokenizer -------------------------------------------------------------------

TOKENS = [
    ("plain", "listen 80;", ["listen", "80", ";"]),
    ("blanks", " \tlisten\r\n  80 ;\n", ["listen", "80", ";"]),
    ("double quotes", 'add_header X "a b";', ["add_header", "X", "a b", ";"]),
    ("single quotes", "add_header X 'a b';", ["add_header", "X", "a b", ";"]),
    ("escaped double quote", r'return 200 "say \"hi\"";', ["return", "200", 'say "hi"', ";"]),
    ("escaped single quote", r"return 200 'it\'s';", ["return", "200", "it's", ";"]),
    ("other quote inside", """return 200 "it's";""", ["return", "200", "it's", ";"]),
    ("escaped backslash", r'return 200 "a\\";', ["return", "200", "a\\", ";"]),
    ("escape sequences", r'return 200 "a\tb\nc\rd";', ["return", "200", "a\tb\nc\rd", ";"]),
    ("unknown escape kept", r'return 200 "a\db";', ["return", "200", r"a\db", ";"]),
    ("hash inside quotes", 'return 200 "#not a comment";', ["return", "200", "#not a comment", ";"]),
    ("hash inside a word", "return 200 a#b;", ["return", "200", "a#b", ";"]),
    ("comment after directive", "listen 80; # listen 81;\nserver_name a;", ["listen", "80", ";", "server_name", "a", ";"]),
    ("comment at end of file", "listen 80; # bye", ["listen", "80", ";"]),
    ("only a comment", "# nothing here", []),
    ("braces inside quotes", 'return 200 "{ } {";', ["return", "200", "{ } {", ";"]),
    ("semicolon inside quotes", "return 200 'a;b';", ["return", "200", "a;b", ";"]),
    ("escaped semicolon outside quotes", r"return 200 a\;b;", ["return", "200", r"a\;b", ";"]),
    ("variable with braces", "return 200 ${host}x;", ["return", "200", "${host}x", ";"]),
    ("variable at word start", "set $a ${b};", ["set", "$a", "${b}", ";"]),
    ("closing brace inside a word", "return 200 a}b;", ["return", "200", "a}b", ";"]),
    ("semicolon ends a word", "listen 80;listen 81;", ["listen", "80", ";", "listen", "81", ";"]),
    ("brace ends a word", "server{}", ["server", "{", "}"]),
    ("empty quoted argument", 'proxy_set_header Connection "";', ["proxy_set_header", "Connection", "", ";"]),
    ("newline inside quotes", 'return 200 "a\nb";', ["return", "200", "a\nb", ";"]),
    ("if with parentheses", 'if ($host = "a") {}', ["if", "($host", "=", "a", ")", "{", "}"]),
    ("regex location", "location ~* \\.(png|jpg)$ {}", ["location", "~*", "\\.(png|jpg)$", "{", "}"]),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in TOKENS], ids=[i for i, _, _ in TOKENS])
def test_tokenize(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_tokens_carry_lines_quoting_and_separators() -> None:
    tokens = list(tokenize('a\n"b\nc" d;\n}'))
    assert [(t.value, t.line, t.quoted, t.special) for t in tokens] == [
        ("a", 1, False, False),
        ("b\nc", 2, True, False),
        ("d", 3, False, False),
        (";", 3, False, True),
        ("}", 4, False, True),
    ]
    # A quoted ";" is a word, not a separator.
    assert [t.special for t in tokenize('a ";";')] == [False, False, True]


TOKEN_ERRORS = [
    ("text right after a closing quote", 'return 200 "a"b;', 1, 'unexpected "b"'),
    ("brace right after a closing quote", 'return 200 "a"}', 1, 'unexpected "}"'),
    ("semicolon without a directive", "listen 80;\n;", 2, 'unexpected ";"'),
    ("brace without a directive", "{ }", 1, 'unexpected "{"'),
    ("closing brace inside a directive", "server {\n listen 80 }", 2, 'unexpected "}"'),
    ("unterminated double quote", 'return 200 "abc;\n}', 2, "unexpected end of file"),
    ("unterminated single quote", "return 200 'abc;", 1, "unexpected end of file"),
    ("missing semicolon at end", "listen 80", 1, 'expecting ";" or "}"'),
    ("backslash at end", "listen 80\\", 1, "unexpected end of file"),
]


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in TOKEN_ERRORS], ids=[c[0] for c in TOKEN_ERRORS])
def test_tokenize_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as caught:
        list(tokenize(text, "/etc/nginx/conf.d/x.conf"))
    assert caught.value.line == line
    assert caught.value.source == f"/etc/nginx/conf.d/x.conf:{line}"
    assert message in caught.value.message
    assert isinstance(caught.value, InputError)


# -- parser ----------------------------------------------------------------------


def test_parse_nested_blocks() -> None:
    tree = parse("http {\n  server {\n    listen 80;\n    location / { return 200; }\n  }\n}\n", "f.conf")
    (http,) = tree
    assert (http.name, http.args, http.line) == ("http", (), 1)
    assert http.block is not None
    (server,) = http.block
    assert server.block is not None
    listen, location = server.block
    assert (listen.name, listen.args, listen.line, listen.block) == ("listen", ("80",), 3, None)
    assert (location.name, location.args, location.where) == ("location", ("/",), "f.conf:4")
    assert location.block is not None and location.block[0].args == ("200",)


PARSE_ERRORS = [
    ("extra closing brace", "server {\n}\n}\n", 3, 'unexpected "}"'),
    ("unclosed block", "server {\n  listen 80;\n", 3, 'expecting "}" (block opened on line 1)'),
    ("unclosed nested block", "http {\n server {\n }\n", 4, 'expecting "}" (block opened on line 1)'),
]


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS])
def test_parse_unbalanced_braces(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as caught:
        parse(text, "a.conf")
    assert (caught.value.file, caught.value.line) == ("a.conf", line)
    assert message in caught.value.message


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_tokenizer_raises_only_its_own_error_on_any_text(text: str) -> None:
    try:
        parse(text, "x.conf")
    except ConfSyntaxError as exc:
        assert exc.line >= 1


NGINX_ALPHABET = st.sampled_from(list("ab$#;{}\"'\\ \t\n()~*.") + ["server", "include", "\r\n"])


@settings(max_examples=500, deadline=None)
@given(st.lists(NGINX_ALPHABET, max_size=60).map("".join))
def test_tokenizer_on_nginx_like_text(text: str) -> None:
    """The characters that matter, densely: still only ConfSyntaxError, lines in range."""
    try:
        tokens = list(tokenize(text, "x.conf"))
    except ConfSyntaxError as exc:
        assert 1 <= exc.line <= text.count("\n") + 1
    else:
        assert all(1 <= t.line <= text.count("\n") + 1 for t in tokens)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_quoted_arguments_round_trip(args: list[str]) -> None:
    (d,) = parse("add_header " + " ".join(_quote(a) for a in args) + ";")
    assert d.args == tuple(args)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_parse_tree_never_raises(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    root = tmp_path_factory.mktemp("conf") / "a.conf"
    root.write_text(text, encoding="utf-8", errors="surrogateescape")
    parsed = parse_tree([root], root.parent)
    assert all(isinstance(p, Problem) for p in parsed.problems)


# -- files and includes ----------------------------------------------------------


def put(base: Path, rel: str, text: str) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def server(names: str, lineage: str | None = None, extra: str = "") -> str:
    cert = (f"    ssl_certificate {LE}/live/{lineage}/fullchain.pem;\n"
            f"    ssl_certificate_key {LE}/live/{lineage}/privkey.pem;\n") if lineage else ""
    return f"server {{\n    listen 443 ssl;\n    server_name {names};\n{cert}{extra}}}\n"


def test_includes_with_globs_and_relative_paths(tmp_path: Path) -> None:
    put(tmp_path, "sites/b.conf", server("b.example.com", "b"))
    put(tmp_path, "sites/a.conf", server("a.example.com", "a"))
    put(tmp_path, "sites/.hidden.conf", server("hidden.example.com", "hidden"))
    put(tmp_path, "snippets/names.conf", "server_name www.c.example.com;\n")
    root = put(tmp_path, "conf.d/main.conf",
               "include sites/*.conf;\n"  # relative to the conf prefix, sorted, no dot files
               "include nothing/*.conf;\n"  # a glob matching nothing is fine
               f"server {{\n  listen 443 ssl;\n  server_name c.example.com;\n  include {tmp_path}/snippets/names.conf;\n"
               f"  ssl_certificate {LE}/live/c/fullchain.pem;\n}}\n")
    parsed = parse_tree([root], tmp_path)
    assert parsed.problems == ()
    assert [s.server_names[0][0] for s in parsed.servers] == ["a.example.com", "b.example.com", "c.example.com"]
    c = parsed.servers[2]
    assert [n for n, _ in c.server_names] == ["c.example.com", "www.c.example.com"]
    assert c.server_names[1][1] == f"{tmp_path}/snippets/names.conf:1"
    assert set(parsed.files) == {str(root), str(tmp_path / "sites/a.conf"), str(tmp_path / "sites/b.conf"),
                                 str(tmp_path / "snippets/names.conf")}


def test_server_order_follows_includes(tmp_path: Path) -> None:
    put(tmp_path, "b.inc", server("b.example.com"))
    root = put(tmp_path, "conf.d/x.conf", server("a.example.com") + "include b.inc;\n" + server("c.example.com"))
    names = [s.server_names[0][0] for s in parse_tree([root], tmp_path).servers]
    assert names == ["a.example.com", "b.example.com", "c.example.com"]


def test_missing_include_is_reported_at_the_include(tmp_path: Path) -> None:
    root = put(tmp_path, "conf.d/x.conf", "\ninclude snippets/gone.conf;\n" + server("a.example.com", "a"))
    parsed = parse_tree([root], tmp_path)
    assert len(parsed.servers) == 1
    (problem,) = parsed.problems
    assert problem.source == f"{root}:2"
    assert f"cannot read {tmp_path}/snippets/gone.conf" in problem.message


def test_include_loop_is_cut(tmp_path: Path) -> None:
    put(tmp_path, "a.inc", "include b.inc;\n")
    put(tmp_path, "b.inc", "include a.inc;\n" + server("b.example.com", "b"))
    root = put(tmp_path, "conf.d/x.conf", "include a.inc;\n" + server("x.example.com", "x"))
    parsed = parse_tree([root], tmp_path)
    assert sorted(s.server_names[0][0] for s in parsed.servers) == ["b.example.com", "x.example.com"]
    (problem,) = parsed.problems
    assert problem.source == f"{tmp_path}/b.inc:1"
    assert "include loop" in problem.message and "a.inc -> " in problem.message


def test_include_depth_is_limited(tmp_path: Path) -> None:
    for i in range(30):
        put(tmp_path, f"inc/{i}.conf", f"include inc/{i + 1}.conf;\n")
    root = put(tmp_path, "conf.d/x.conf", "include inc/0.conf;\n" + server("x.example.com", "x"))
    parsed = parse_tree([root], tmp_path)
    assert len(parsed.servers) == 1
    assert len(parsed.problems) == 1
    assert "deeper than 20" in parsed.problems[0].message


def test_same_file_included_twice_is_no_loop(tmp_path: Path) -> None:
    put(tmp_path, "tls.inc", "ssl_protocols TLSv1.2 TLSv1.3;\n")
    root = put(tmp_path, "conf.d/x.conf", server("a.example.com", extra="include tls.inc;\n")
               + server("b.example.com", extra="include tls.inc;\n"))
    parsed = parse_tree([root], tmp_path)
    assert parsed.problems == ()
    assert all(s.named("ssl_protocols") for s in parsed.servers)


def test_a_bad_file_does_not_hide_the_others(tmp_path: Path) -> None:
    bad = put(tmp_path, "conf.d/a.conf", server("bad.example.com", "bad") + "}\n")
    good = put(tmp_path, "conf.d/b.conf", server("good.example.com", "good"))
    demands, problems = demands_from_files([bad, good], tmp_path, LE)
    assert demands == [CertDemand("good", ("good.example.com",), (f"{good}:4",))]
    assert problems == [Problem(f"{bad}:7", 'unexpected "}"')]


def test_a_bad_include_is_reported_where_it_is_bad(tmp_path: Path) -> None:
    put(tmp_path, "broken.inc", 'server_name "oops;\n')
    root = put(tmp_path, "conf.d/a.conf", server("a.example.com", "a", extra="include broken.inc;\n"))
    demands, problems = demands_from_files([root], tmp_path, LE)
    assert [d.name for d in demands] == ["a"]
    assert [p.source for p in problems] == [f"{tmp_path}/broken.inc:2"]


def test_sidecar_files_are_ignored(tmp_path: Path) -> None:
    put(tmp_path, "conf.d/sidecar-site-x.conf", server("x.example.com", "x"))
    put(tmp_path, "conf.d/sidecar-00-global.conf", "this is not even nginx")
    put(tmp_path, "conf.d/user.conf", server("u.example.com", "u"))
    put(tmp_path, "conf.d/sidecar-include/acme-challenge.conf", "location / {}\n")
    roots = conf_d_roots(tmp_path / "conf.d")
    assert [p.name for p in roots] == ["user.conf"]
    # Also when reached through a glob (an nginx.conf as the root).
    main = put(tmp_path, "nginx.conf", "events {}\nhttp {\n  include conf.d/*.conf;\n}\n")
    parsed = parse_tree([main, tmp_path / "conf.d/sidecar-site-x.conf"], tmp_path, root_context="main")
    assert parsed.problems == ()
    assert [s.server_names[0][0] for s in parsed.servers] == ["u.example.com"]


def test_only_http_servers_count(tmp_path: Path) -> None:
    main = put(tmp_path, "nginx.conf",
               "events {}\n"
               "stream {\n  server {\n    listen 443 ssl;\n"
               f"    ssl_certificate {LE}/live/s/fullchain.pem;\n  }}\n}}\n"
               "http {\n  upstream u { server 10.0.0.1:80; }\n" + server("h.example.com", "h") + "}\n")
    parsed = parse_tree([main], tmp_path, root_context="main")
    assert [s.server_names for s in parsed.servers] == [(("h.example.com", f"{main}:12"),)]


def test_includes_inside_locations_are_not_followed(tmp_path: Path) -> None:
    root = put(tmp_path, "conf.d/x.conf",
               server("x.example.com", "x", extra="    location / { include fastcgi_params; }\n"))
    parsed = parse_tree([root], tmp_path)
    assert parsed.problems == ()  # fastcgi_params is not readable here, and need not be


def test_mounts_map_nginx_paths_to_the_sidecar(tmp_path: Path) -> None:
    local = tmp_path / "volume"
    put(local, "common/names.conf", "server_name www.m.example.com;\n")
    root = put(local, "m.conf", server("m.example.com", "m", extra="    include /etc/nginx/conf.d/common/*.conf;\n"))
    parsed = parse_tree([root], "/etc/nginx", mounts={"/etc/nginx/conf.d": local})
    assert parsed.problems == ()
    (s,) = parsed.servers
    assert s.where == "/etc/nginx/conf.d/m.conf:1"
    assert s.server_names[1] == ("www.m.example.com", "/etc/nginx/conf.d/common/names.conf:1")


def test_read_callable_is_used(tmp_path: Path) -> None:
    files = {"/conf/a.conf": server("a.example.com", "a")}

    def read(path: Path) -> str:
        try:
            return files[str(path)]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", str(path)) from None

    demands, problems = demands_from_files([Path("/conf/a.conf"), Path("/conf/b.conf")], "/etc/nginx", LE, read)
    assert [d.name for d in demands] == ["a"]
    assert problems == [Problem("/conf/b.conf", "cannot read /conf/b.conf: No such file or directory")]


# -- certificate demands ---------------------------------------------------------


def demands_of(text: str, tmp_path: Path, certs_dir: str = LE) -> tuple[list[CertDemand], list[Problem]]:
    root = put(tmp_path, "conf.d/site.conf", text)
    parsed = parse_tree([root], tmp_path)
    assert parsed.problems == ()
    return certificate_demands(parsed.servers, certs_dir)


def test_blocks_sharing_a_lineage_are_merged_in_order(tmp_path: Path) -> None:
    text = (server("example.com www.example.com", "example.com")
            + server("api.example.com www.example.com", "example.com")
            + server("other.example.org", "other"))
    demands, problems = demands_of(text, tmp_path)
    f = tmp_path / "conf.d/site.conf"
    assert demands == [
        CertDemand("example.com", ("example.com", "www.example.com", "api.example.com"), (f"{f}:4", f"{f}:10")),
        CertDemand("other", ("other.example.org",), (f"{f}:16",)),
    ]
    assert problems == []


def test_certificates_elsewhere_are_not_the_sidecars_business(tmp_path: Path) -> None:
    text = ("server {\n listen 443 ssl;\n server_name a.example.com;\n"
            " ssl_certificate /etc/ssl/certs/a.pem;\n ssl_certificate_key /etc/ssl/private/a.key;\n}\n"
            "server {\n listen 443 ssl;\n server_name b.example.com;\n"
            " ssl_certificate /etc/letsencrypt-old/live/b/fullchain.pem;\n}\n"
            "server {\n listen 80;\n server_name c.example.com;\n}\n"
            "server {\n listen 443 ssl;\n server_name d.example.com;\n ssl_certificate data:$cert;\n}\n")
    assert demands_of(text, tmp_path) == ([], [])


def test_cert_pem_counts_and_certs_dir_is_normalised(tmp_path: Path) -> None:
    text = ("server {\n listen 443 ssl;\n server_name a.example.com;\n"
            " ssl_certificate /etc/letsencrypt//live/a/../a/cert.pem;\n}\n")
    demands, _ = demands_of(text, tmp_path, certs_dir="/etc/letsencrypt/")
    assert [(d.name, d.domains) for d in demands] == [("a", ("a.example.com",))]


LINEAGE_PATH_PROBLEMS = [
    ("chain instead of fullchain", f"{LE}/live/a/chain.pem", "expected /etc/letsencrypt/live/NAME/fullchain.pem"),
    ("too deep", f"{LE}/live/a/b/fullchain.pem", "expected /etc/letsencrypt/live/NAME/fullchain.pem"),
    ("variable", f"{LE}/live/$ssl_server_name/fullchain.pem", "cannot tell which certificate"),
    ("odd name", f"{LE}/live/-a/fullchain.pem", "not a usable lineage name"),
]


@pytest.mark.parametrize(("path", "message"), [c[1:] for c in LINEAGE_PATH_PROBLEMS],
                         ids=[c[0] for c in LINEAGE_PATH_PROBLEMS])
def test_unusable_lineage_paths_are_reported(tmp_path: Path, path: str, message: str) -> None:
    text = f"server {{\n listen 443 ssl;\n server_name a.example.com;\n ssl_certificate {path};\n}}\n"
    demands, problems = demands_of(text, tmp_path)
    assert demands == []
    (problem,) = problems
    assert problem.source.endswith("site.conf:4")
    assert message in problem.message


SERVER_NAMES = [
    # (server_name arguments, domains wanted, problem substrings)
    ("upper case and trailing dot", "WWW.Example.COM example.com.", ("www.example.com", "example.com"), []),
    ("duplicates", "a.example.com a.example.com A.example.com", ("a.example.com",), []),
    ("catch-all and empty name", '_ "" a.example.com', ("a.example.com",), []),
    ("internationalised", "bücher.example", ("xn--bcher-kva.example",), []),
    ("wildcard", "*.example.com a.example.com", ("a.example.com",), ["wildcards cannot be validated"]),
    ("wildcard at the end", "www.example.* a.example.com", ("a.example.com",), ["wildcards cannot be validated"]),
    ("leading dot", ".example.com", ("example.com",), ["only example.com is covered"]),
    ("regex", r"~^(www\.)?(?<d>.+)$ a.example.com", ("a.example.com",), ["regular expression"]),
    ("variable", "$hostname a.example.com", ("a.example.com",), ["variable"]),
    ("single label", "localhost a.example.com", ("a.example.com",), ["needs at least two labels"]),
    ("ip address", "192.0.2.1 a.example.com", ("a.example.com",), ["IP address"]),
]


@pytest.mark.parametrize(("names", "domains", "messages"), [c[1:] for c in SERVER_NAMES],
                         ids=[c[0] for c in SERVER_NAMES])
def test_server_name_edge_cases(tmp_path: Path, names: str, domains: tuple[str, ...], messages: list[str]) -> None:
    text = f"server {{\n listen 443 ssl;\n server_name {names};\n ssl_certificate {LE}/live/n/fullchain.pem;\n}}\n"
    demands, problems = demands_of(text, tmp_path)
    assert [d.domains for d in demands] == [domains]
    assert len(problems) == len(messages)
    for problem, message in zip(problems, messages):
        assert problem.source.endswith("site.conf:3")
        assert message in problem.message


@pytest.mark.parametrize("names", ["_", '""', None], ids=["catch-all", "empty", "no server_name"])
def test_a_lineage_without_usable_names_is_reported(tmp_path: Path, names: str | None) -> None:
    line = f" server_name {names};\n" if names else ""
    text = f"server {{\n listen 443 ssl;\n{line} ssl_certificate {LE}/live/n/fullchain.pem;\n}}\n"
    demands, problems = demands_of(text, tmp_path)
    assert demands == []
    (problem,) = problems
    assert "certificate n: the server block at" in problem.message
    assert "has no server_name a certificate can cover" in problem.message


def test_several_server_name_directives_and_dual_certificates(tmp_path: Path) -> None:
    text = ("server {\n listen 443 ssl;\n server_name a.example.com;\n server_name b.example.com;\n"
            f" ssl_certificate {LE}/live/a/fullchain.pem;\n ssl_certificate_key {LE}/live/a/privkey.pem;\n"
            f" ssl_certificate {LE}/live/a-rsa/fullchain.pem;\n ssl_certificate_key {LE}/live/a-rsa/privkey.pem;\n}}\n")
    demands, problems = demands_of(text, tmp_path)
    assert [(d.name, d.domains) for d in demands] == [("a", ("a.example.com", "b.example.com")),
                                                      ("a-rsa", ("a.example.com", "b.example.com"))]
    assert problems == []


def test_key_from_another_lineage_is_reported(tmp_path: Path) -> None:
    text = server("a.example.com", extra=f"    ssl_certificate {LE}/live/a/fullchain.pem;\n"
                                         f"    ssl_certificate_key {LE}/live/b/privkey.pem;\n")
    demands, problems = demands_of(text, tmp_path)
    assert [d.name for d in demands] == ["a"]
    assert [p.message for p in problems] == ["ssl_certificate_key is from lineage b, the certificate from a"]


def test_http_level_certificate_is_inherited_by_tls_servers(tmp_path: Path) -> None:
    text = (f"ssl_certificate {LE}/live/shared/fullchain.pem;\n"
            "server {\n listen 443 ssl;\n server_name a.example.com;\n}\n"
            "server {\n listen 80;\n server_name plain.example.com;\n}\n"
            f"server {{\n listen 443 ssl;\n server_name own.example.com;\n"
            f" ssl_certificate {LE}/live/own/fullchain.pem;\n}}\n")
    demands, problems = demands_of(text, tmp_path)
    assert [(d.name, d.domains) for d in demands] == [("shared", ("a.example.com",)), ("own", ("own.example.com",))]
    assert demands[0].sources[0].endswith("site.conf:1")


def test_too_many_names_for_one_certificate(tmp_path: Path) -> None:
    names = " ".join(f"n{i}.example.com" for i in range(101))
    demands, problems = demands_of(server(names, "big"), tmp_path)
    assert demands == []
    assert "101 names" in problems[0].message


# -- listen / default_server -----------------------------------------------------


@pytest.mark.parametrize(("address", "port"), [
    ("80", 80), ("443", 443), ("127.0.0.1", 80), ("127.0.0.1:8443", 8443), ("*:443", 443), ("[::]:443", 443),
    ("[::1]", 80), ("localhost:8080", 8080), ("unix:/run/nginx.sock", None), ("99999", None),
])
def test_listen_port(address: str, port: int | None) -> None:
    assert listen_port(address) == port


def test_default_server_ports(tmp_path: Path) -> None:
    root = put(tmp_path, "conf.d/x.conf",
               "server {\n listen 80 default_server;\n listen [::]:80 default_server;\n}\n"
               "server {\n listen 443 ssl;\n}\n")
    assert default_server_ports(parse_tree([root], tmp_path).servers) == {80: f"{root}:2"}


@pytest.mark.parametrize(("path", "relevant"), [
    ("/etc/nginx/conf.d/site.conf", True),
    ("/etc/nginx/conf.d/sidecar-site-a.conf", False),
    ("/etc/nginx/conf.d/.sidecar-tmp-abc", False),
    ("/etc/nginx/conf.d/sidecar-include/acme-challenge.conf", False),
    ("/etc/nginx/conf.d/common/tls.inc", True),
])
def test_relevant_change(path: str, relevant: bool) -> None:
    assert relevant_change(path) is relevant


# -- shipped snippets ------------------------------------------------------------


def test_snippets_are_shipped_and_parse() -> None:
    files = snippet_files()
    assert sorted(files) == ["acme-challenge.conf", "tls-intermediate-pq.conf", "tls-intermediate.conf"]
    for name, text in files.items():
        assert parse(text, name)


def _settings(text: str) -> dict[str, tuple[str, ...]]:
    return {d.name: d.args for d in parse(text) if d.block is None}


@pytest.mark.parametrize(("name", "traits"), [("tls-intermediate.conf", NginxTraits()),
                                              ("tls-intermediate-pq.conf", NginxTraits(post_quantum=True))])
def test_tls_snippets_match_the_generated_sites(name: str, traits: NginxTraits) -> None:
    got = _settings(snippet_files()[name])
    profile = tls_profile(traits, "intermediate")
    assert got["ssl_protocols"] == tuple(profile.protocols.split())
    assert got["ssl_ciphers"] == (profile.ciphers,) == (MOZILLA_INTERMEDIATE_CIPHERS,)
    assert got["ssl_ecdh_curve"] == (profile.curves,)
    assert got["ssl_prefer_server_ciphers"] == ("off",)
    assert got["add_header"] == ("Strict-Transport-Security", Hsts().header, "always")


def test_acme_snippet_serves_the_webroot() -> None:
    (location,) = parse(snippet_files("/srv/acme")["acme-challenge.conf"])
    assert (location.name, location.args) == ("location", ("^~", "/.well-known/acme-challenge/"))
    assert location.block is not None
    inner = {d.name: d.args for d in location.block}
    assert inner["root"] == ("/srv/acme",)
    assert inner["try_files"] == ("$uri", "=404")
    assert parse(snippet_files()["acme-challenge.conf"])[0].block[0].args == ("/var/www/acme",)  # type: ignore[index]


@pytest.mark.parametrize("webroot", ["relative/path", "/with space", "/semi;colon", "/quote'"])
def test_snippet_webroot_must_be_plain(webroot: str) -> None:
    with pytest.raises(ConfigError, match="WEBROOT_DIR="):
        snippet_files(webroot)


def test_install_snippets_writes_once_outside_the_conf_d_glob(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    assert install_snippets(conf) == ["acme-challenge.conf", "tls-intermediate-pq.conf", "tls-intermediate.conf"]
    assert install_snippets(conf) == []
    assert (conf / nginxconf.SNIPPETS_DIRNAME / "acme-challenge.conf").read_text() == \
        snippet_files()["acme-challenge.conf"]
    assert conf_d_roots(conf) == []  # nginx's conf.d/*.conf does not reach them
    assert install_snippets(conf, "/srv/acme") == ["acme-challenge.conf"]
