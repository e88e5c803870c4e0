from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.domains import MAX_NAMES_PER_CERT, DomainError, looks_numeric, normalize_domain, parse_domain_list

VALID = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  www.example.com \n", "www.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("a-b.example.com", "a-b.example.com"),
        ("1.2.3.example", "1.2.3.example"),
        ("x.y." + "a" * 63 + ".com", "x.y." + "a" * 63 + ".com"),
        (".".join(["a" * 61] * 4) + ".com", ".".join(["a" * 61] * 4) + ".com"),  # 252 octets
    ],
    ids=[
        "plain", "uppercase", "trailing-dot", "whitespace", "idn", "idn-uppercase", "punycode-kept",
        "idn-tld", "hyphen-inside", "numeric-inner-labels", "63-octet-label", "252-octets",
    ],
)
def test_normalize_domain_accepts(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("*.example.com", "wildcard"),
        ("www.*.example.com", "wildcard"),
        ("192.0.2.1", "IP address"),
        ("2001:db8::1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("localhost", "two labels"),
        ("localhost.", "two labels"),
        ("example.123", "numeric"),
        ("a" * 64 + ".com", "label"),
        (".".join(["a" * 63] * 4) + ".com", "253"),
        ("x" * 1001, "too long"),
        ("exa_mple.com", "label"),
        ("exa mple.com", "label"),
        ("-example.com", "label"),
        ("example-.com", "label"),
        ("www.-bad.com", "label"),
        ("example..com", "label"),
        (".example.com", "label"),
        ("example.com..", "label"),
        ("exam/ple.com", "label"),
        ("exam;ple.com", "label"),
        ("example.com:443", "label"),
        ("xn--zz.example", "internationalised"),
        ("☃.example\u200d", "internationalised"),
    ],
    ids=[
        "empty", "blank", "wildcard", "inner-wildcard", "ipv4", "ipv6", "ipv6-bracketed", "single-label",
        "single-label-dot", "numeric-tld", "label-64", "name-over-253", "absurdly-long", "underscore",
        "space", "leading-hyphen", "trailing-hyphen", "inner-leading-hyphen", "empty-label",
        "leading-dot", "two-trailing-dots", "slash", "semicolon", "port", "bad-punycode", "bad-idn",
    ],
)
def test_normalize_domain_rejects(raw: str, why: str) -> None:
    with pytest.raises(DomainError, match=re.escape(why)):
        normalize_domain(raw)


def test_normalize_domain_rejects_non_strings() -> None:
    with pytest.raises(DomainError):
        normalize_domain(b"example.com")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.example.com", ("a.example.com",)),
        ("a.example.com,b.example.com", ("a.example.com", "b.example.com")),
        ("a.example.com, b.example.com", ("a.example.com", "b.example.com")),
        ("a.example.com b.example.com\tc.example.com\n", ("a.example.com", "b.example.com", "c.example.com")),
        (",,a.example.com,, ,b.example.com,", ("a.example.com", "b.example.com")),
        ("b.example.com,a.example.com", ("b.example.com", "a.example.com")),
        ("a.example.com,A.EXAMPLE.COM,a.example.com.", ("a.example.com",)),
        ("b.example.com a.example.com b.example.com", ("b.example.com", "a.example.com")),
        ("bücher.example,xn--bcher-kva.example", ("xn--bcher-kva.example",)),
    ],
    ids=["one", "comma", "comma-space", "whitespace", "empty-items", "order-kept", "dedupe-normalised",
         "dedupe-keeps-first", "dedupe-idn"],
)
def test_parse_domain_list(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_domain_list(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", " , ,", "a.example.com,*.example.com", "a.example.com localhost", "x" * 20_001],
    ids=["empty", "only-separators", "one-bad-wildcard", "one-bad-single-label", "too-long"],
)
def test_parse_domain_list_rejects(raw: str) -> None:
    with pytest.raises(DomainError):
        parse_domain_list(raw)


def test_at_most_100_names_per_certificate() -> None:
    names = [f"n{i}.example.com" for i in range(MAX_NAMES_PER_CERT + 1)]
    assert len(parse_domain_list(",".join(names[:MAX_NAMES_PER_CERT]))) == 100
    with pytest.raises(DomainError, match="101 names"):
        parse_domain_list(",".join(names))
    # duplicates do not count against the limit
    assert len(parse_domain_list(",".join(names[:100] + names[:50]))) == 100


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="abcXYZ019-._*:[] \tüßé☃\u200d", max_size=80),
        st.lists(st.from_regex(r"[a-zA-Z0-9-]{0,64}", fullmatch=True), min_size=1, max_size=6).map(".".join),
    )
)
def test_normalize_domain_is_total(raw: str) -> None:
    """Any text: a valid lower-case ASCII host name comes out, or DomainError; nothing else."""
    try:
        name = normalize_domain(raw)
    except DomainError:
        return
    assert name.isascii() and name == name.lower()
    assert VALID.fullmatch(name), name
    assert not name.rsplit(".", 1)[1].isdigit()
    assert normalize_domain(name) == name  # idempotent


@pytest.mark.parametrize(("host", "numeric"), [("192.0.2.1", True), ("2001:db8::1", True), ("[::1]", True),
                                               ("1234", True), ("app", False), ("s1.example.com", False),
                                               ("1.example.com", False), ("10.0.0.5.nip.io", False)])
def test_only_names_that_may_be_ip_addresses_are_asked_of_ipaddress(host: str, numeric: bool) -> None:
    assert looks_numeric(host) is numeric
