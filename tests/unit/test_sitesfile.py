from __future__ import annotations

import textwrap

import pytest

from sidecar.core.errors import InputError
from sidecar.core.model import SourceKind, Upstream
from sidecar.sources.sitesfile import parse_sites_file, parse_upstream

PATH = "/config/sites.yml"


def _parse(text: str):  # type: ignore[no-untyped-def]
    return parse_sites_file(textwrap.dedent(text), PATH)


def test_valid_file() -> None:
    sites, problems = _parse(
        """
        sites:
          - domains: [static.example.com, WWW.static.example.com]
            upstream: http://10.0.0.5:8080
          - domains: "docs.example.com, docs2.example.com"
            upstream: https://docs-backend
        """
    )
    assert problems == []
    assert [s.domains for s in sites] == [
        ("static.example.com", "www.static.example.com"),
        ("docs.example.com", "docs2.example.com"),
    ]
    assert sites[0].upstreams == (Upstream("http", "10.0.0.5", 8080),)
    assert sites[1].upstreams == (Upstream("https", "docs-backend", 443),)
    assert all(s.source_kind is SourceKind.FILE for s in sites)
    assert sites[0].source == f"sites file {PATH} entry 1 (static.example.com)"
    assert sites[1].source == f"sites file {PATH} entry 2 (docs.example.com)"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://app", Upstream("http", "app", 80)),
        ("https://app", Upstream("https", "app", 443)),
        ("http://app:8080", Upstream("http", "app", 8080)),
        ("https://app:8443/", Upstream("https", "app", 8443)),
        ("  http://App.Internal:81  ", Upstream("http", "app.internal", 81)),
        ("http://10.0.0.5", Upstream("http", "10.0.0.5", 80)),
        ("http://[2001:db8::5]:8080", Upstream("http", "2001:db8::5", 8080)),
        ("https://[2001:DB8:0::5]", Upstream("https", "2001:db8::5", 443)),
        ("http://my_app", Upstream("http", "my_app", 80)),
    ],
    ids=["http-default-port", "https-default-port", "port", "trailing-slash", "case-and-space", "ipv4",
         "ipv6", "ipv6-compressed-default-port", "underscore-host"],
)
def test_parse_upstream(raw: str, expected: Upstream) -> None:
    assert parse_upstream(raw) == expected


def test_ipv6_upstream_url_is_bracketed() -> None:
    assert parse_upstream("http://[2001:db8::5]:8080").url == "http://[2001:db8::5]:8080"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("http://app/api", "no path"),
        ("http://app?x=1", "no path, query"),
        ("http://app/#frag", "no path"),
        ("http://user:pw@app", "credentials"),
        ("http://user@app", "credentials"),
        ("ftp://app", "scheme must be http or https"),
        ("app:8080", "scheme must be http or https"),
        ("tcp://app", "scheme must be http or https"),
        ("http://app:99999", "not a valid URL"),
        ("http://app:port", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("http://", "not a host name"),
        ("http://app;evil", "not a host name"),
        ("http://app name", "spaces and control characters"),
        ("http://app:0", "port"),
        ("", "must be a URL"),
        (8080, "must be a URL"),
        (None, "must be a URL"),
    ],
    ids=["path", "query", "fragment", "credentials", "user", "ftp", "no-scheme", "tcp", "port-too-big",
         "port-word", "unclosed-ipv6", "no-host", "semicolon-host", "space-host", "port-zero", "empty",
         "number", "missing"],
)
def test_parse_upstream_rejects(raw: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_upstream(raw)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("- [a.example.com]", "must be a mapping"),
        ("- just-a-string", "must be a mapping"),
        ("- {domains: a.example.com, upstream: 'http://a', bogus: true}", "unknown key 'bogus'"),
        ("- {domain: a.example.com, upstream: 'http://a'}", "unknown key 'domain'"),
        ("- {upstream: 'http://a'}", "domains:"),
        ("- {domains: [a.example.com, 5], upstream: 'http://a'}", "domains:"),
        ("- {domains: '*.example.com', upstream: 'http://a'}", "wildcard"),
        ("- {domains: [], upstream: 'http://a'}", "no domain names"),
        ("- {domains: a.example.com}", "upstream:"),
        ("- {domains: a.example.com, upstream: 'http://a/path'}", "upstream:"),
    ],
    ids=["list", "string", "unknown-key", "typo-key", "no-domains", "non-string-domain", "wildcard",
         "empty-domains", "no-upstream", "upstream-path"],
)
def test_bad_entry_is_a_problem_and_good_entries_survive(entry: str, words: str) -> None:
    text = (
        "sites:\n"
        "  - {domains: first.example.com, upstream: 'http://first'}\n"
        f"  {entry}\n"
        "  - {domains: last.example.com, upstream: 'http://last:81'}\n"
    )
    sites, problems = parse_sites_file(text, PATH)
    assert [s.name for s in sites] == ["first.example.com", "last.example.com"]
    assert len(problems) == 1
    assert problems[0].source.startswith(f"sites file {PATH} entry 2")
    assert words in problems[0].message
    assert len(str(problems[0]).splitlines()) == 1


@pytest.mark.parametrize(
    "text", ["", "\n", "# only a comment\n", "sites:\n", "sites: []\n"],
    ids=["empty", "newline", "comment", "null-sites", "empty-list"],
)
def test_empty_file_means_no_sites(text: str) -> None:
    assert parse_sites_file(text, PATH) == ([], [])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("sites:\n  - domains: [a.example.com\n    upstream: http://a\n", None),
        ("sites:\n  - domains: a.example.com\n   upstream: http://a\n", 3),
        ("sites:\n\t- domains: a.example.com\n", 2),
        ("sites: !!python/object:os.system {}\n", 1),
    ],
    ids=["unclosed-bracket", "bad-indent", "tab", "unsafe-tag"],
)
def test_invalid_yaml_raises_input_error_with_line(text: str, line: int | None) -> None:
    with pytest.raises(InputError) as info:
        parse_sites_file(text, PATH)
    assert info.value.source.startswith(f"sites file {PATH} line ")
    if line is not None:
        assert info.value.source == f"sites file {PATH} line {line}"
    assert "invalid YAML" in info.value.message
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- domains: a.example.com\n  upstream: http://a\n", "single key 'sites'"),
        ("just text\n", "single key 'sites'"),
        ("sites: []\nextra: 1\n", "single key 'sites'"),
        ("site:\n  - domains: a.example.com\n", "single key 'sites'"),
        ("sites: {domains: a.example.com}\n", "'sites' must be a list"),
        ("sites: a.example.com\n", "'sites' must be a list"),
    ],
    ids=["list-at-top", "scalar", "extra-key", "misspelt-key", "sites-mapping", "sites-scalar"],
)
def test_wrong_top_level_raises_input_error(text: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as info:
        parse_sites_file(text, PATH)
    assert info.value.source == f"sites file {PATH}"


def test_oversized_file_raises_input_error() -> None:
    with pytest.raises(InputError, match="larger than"):
        parse_sites_file("#" * 1_000_001, PATH)


# -- the parsed file kept across restarts ------------------------------------------------

_SOURCES: list = []  # type: ignore[type-arg]


def _source(*args):  # type: ignore[no-untyped-def]
    from sidecar.sources.sitesfile import SitesFileSource
    _SOURCES.append(SitesFileSource(*args))
    return _SOURCES[-1]


def _big_file(tmp_path, n: int = 1200):  # type: ignore[no-untyped-def]
    path = tmp_path / "sites.yml"
    entries = "".join(f"  - {{domains: [s{i}.example.com], upstream: 'http://app:5678', bad_key_{i % 2}: 1}}\n"
                      if i % 500 == 7 else f"  - {{domains: [s{i}.example.com], upstream: 'http://app:5678'}}\n"
                      for i in range(n))
    path.write_text("sites:\n" + entries)
    return path


def _saved() -> None:
    import threading
    for source in _SOURCES:
        source.keep_parsed()
    _SOURCES.clear()
    for t in threading.enumerate():
        if t.name == "sites-file-cache":
            t.join()


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from sidecar.sources import sitesfile
    calls: list[int] = []
    real = sitesfile.parse_sites_file
    monkeypatch.setattr(sitesfile, "parse_sites_file", lambda *a: calls.append(1) or real(*a))
    return calls


def test_a_big_sites_file_is_parsed_once_across_restarts(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from sidecar.sources.sitesfile import PARSED
    path, state = _big_file(tmp_path), tmp_path / "state"
    state.mkdir()
    calls = _counting(monkeypatch)
    first = _source(path, state).read()
    _saved()
    assert calls == [1] and (state / PARSED).stat().st_mode & 0o777 == 0o600
    again = _source(path, state).read()  # a restart, the file unchanged
    assert calls == [1] and again == first and len(again[0]) == 1197 and len(again[1]) == 3
    # Changed: parsed again, and that is what the next start finds.
    path.write_text(path.read_text().replace("s1.example.com", "renamed.example.com"))
    source = _source(path, state)
    changed = source.read()
    _saved()
    assert calls == [1, 1] and changed[0][1].domains == ("renamed.example.com",)
    assert _source(path, state).read() == changed and calls == [1, 1]


def test_the_kept_parse_is_not_used_with_other_defaults_damaged_or_writable_by_others(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.core import options
    from sidecar.sources.sitesfile import PARSED
    path, state = _big_file(tmp_path), tmp_path / "state"
    state.mkdir()
    calls = _counting(monkeypatch)
    _source(path, state).read()
    _saved()
    _source(path, state, options.Defaults(dns_provider="rfc2136")).read()  # (another environment)
    assert len(calls) == 2
    _saved()
    _source(path, state).read()
    _saved()
    n = len(calls)
    (state / PARSED).chmod(0o620)
    assert _source(path, state).read()[0] and len(calls) == n + 1
    _saved()
    blob = (state / PARSED).read_bytes()
    (state / PARSED).write_bytes(blob[: len(blob) // 2])  # cut short
    assert len(_source(path, state).read()[0]) == 1197 and len(calls) == n + 2


def test_a_small_sites_file_keeps_no_parse(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sidecar.sources.sitesfile import PARSED
    path, state = _big_file(tmp_path, n=10), tmp_path / "state"
    state.mkdir()
    (state / PARSED).write_bytes(b"left by a bigger file\n")
    assert len(_source(path, state).read()[0]) == 9  # (entry 8 has an unknown key)
    assert not (state / PARSED).exists()


PER_ENTRY_TEXTS = [
    "sites:\n  - {domains: a.example.com, upstream: 'http://a'}\n  - {domains: b.example.com, upstream: 'http://b:81'}\n",
    "# my sites\nsites:   # all of them\n- domains: [a.example.com, www.a.example.com]\n  upstream: http://a\n"
    "  # a comment inside\n  tls: modern\n\n- domains: b.example.com\n  upstream: http://b\n  headers:\n    X-A: \"1\"\n",
    "sites:\n  - {domains: a.example.com, upstream: 'http://a', bogus: 1}\n  - [x]\n  - {domains: [], upstream: 'http://c'}\n"
    "  - {domains: d.example.com, upstream: 'http://d/path'}\n  - {domains: e.example.com, upstream: 'https://e'}\n",
    "sites:\n",
]


@pytest.mark.parametrize("text", PER_ENTRY_TEXTS, ids=["flow", "block-comments", "problems", "no-entries"])
def test_the_per_entry_parse_gives_what_the_whole_file_gives(text: str) -> None:
    from sidecar.sources.sitesfile import _entry_chunks
    assert _entry_chunks(text) is not None  # (the per-entry path is the one tested)
    cache: dict = {}  # type: ignore[type-arg]
    assert parse_sites_file(text, PATH, cache=cache) == parse_sites_file(text, PATH)
    assert parse_sites_file(text, PATH, cache=cache) == parse_sites_file(text, PATH)  # (from the cache)


@pytest.mark.parametrize(
    "text",
    [
        "sites:\n  - &one {domains: a.example.com, upstream: 'http://a'}\n  - *one\n",
        "sites:\n  - {domains: a.example.com, upstream: !!str 'http://a'}\n",
        "sites: [{domains: a.example.com, upstream: 'http://a'}]\n",
        "sites:\n  - domains: a.example.com\n    upstream: http://a\nextra: 1\n",
        "---\nsites:\n  - {domains: a.example.com, upstream: 'http://a'}\n",
        "sites:\n  - domains: a.example.com\n  upstream: http://a\n",
        "sites:\n  - domains: [a.example.com\n    upstream: http://a\n",
    ],
    ids=["anchor-alias", "tag", "flow-list", "extra-key", "document-marker", "bad-indent", "unclosed"],
)
def test_anything_but_a_plain_list_of_entries_is_parsed_whole(text: str) -> None:
    """Entries tied to each other, or a layout the split does not know, give the whole file's
    result: the same sites, or the same error with its line."""
    def outcome(**kw: object) -> object:
        try:
            return parse_sites_file(text, PATH, **kw)  # type: ignore[arg-type]
        except InputError as exc:
            return str(exc)
    assert outcome(cache={}) == outcome()


def test_one_added_or_changed_entry_is_the_only_one_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.sources import sitesfile
    text = "sites:\n" + "".join(f"  - {{domains: s{i}.example.com, upstream: 'http://app:80'}}\n" for i in range(200))
    cache: sitesfile.EntryCache = {}
    loads: list[int] = []
    real_load = sitesfile.yaml.load
    monkeypatch.setattr(sitesfile.yaml, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    first = parse_sites_file(text, PATH, cache=cache)
    assert loads == [1] and len(cache) == 200  # a cold cache: the whole file in one load, then kept by entry
    parsed: list[int] = []
    real = sitesfile._parse_entry
    monkeypatch.setattr(sitesfile, "_parse_entry", lambda i, *a: parsed.append(i) or real(i, *a))
    added = text + "  - {domains: new.example.com, upstream: 'http://other:80'}\n"
    sites, problems = parse_sites_file(added, PATH, cache=cache)
    assert parsed == [201] and sites[:200] == first[0] and sites[200].name == "new.example.com" and not problems
    changed = added.replace("s7.example.com", "seven.example.com")
    assert parse_sites_file(changed, PATH, cache=cache)[0][7].name == "seven.example.com" and parsed == [201, 8]
    assert len(cache) == 201  # (only the file's current entries)
    removed = changed.replace("  - {domains: s0.example.com, upstream: 'http://app:80'}\n", "")
    assert parse_sites_file(removed, PATH, cache=cache) == parse_sites_file(removed, PATH)  # places moved: all again


def test_after_a_restart_from_the_kept_parse_one_changed_entry_is_the_only_one_parsed(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.sources import sitesfile
    path, state = _big_file(tmp_path), tmp_path / "state"
    state.mkdir()
    _source(path, state).read()
    _saved()
    source = _source(path, state)  # a restart: the kept parse, with its entries
    parsed: list[int] = []
    real = sitesfile._parse_entry
    monkeypatch.setattr(sitesfile, "_parse_entry", lambda i, *a: parsed.append(i) or real(i, *a))
    assert len(source.read()[0]) == 1197 and parsed == []
    path.write_text(path.read_text() + "  - {domains: [added.example.com], upstream: 'http://app:5678'}\n")
    sites, _ = source.read()
    assert parsed == [1201] and sites[-1].name == "added.example.com"
