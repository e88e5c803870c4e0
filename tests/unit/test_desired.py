from __future__ import annotations

import itertools

import pytest

from sidecar.core.desired import merge
from sidecar.core.model import Problem, SourceKind, Upstream

from .builders import site

FILE = SourceKind.FILE


def test_no_conflict_keeps_everything_in_order_files_first() -> None:
    f = site("static.example.com", kind=FILE, source="sites file entry 1")
    c1 = site("b.example.com", source="container b", created="2026-01-02")
    c2 = site("a.example.com", source="container a", created="2026-01-01")
    state = merge([f], [c1, c2], [Problem("x", "earlier problem")])
    assert [s.source for s in state.sites] == ["sites file entry 1", "container a", "container b"]
    assert state.problems == (Problem("x", "earlier problem"),)


@pytest.mark.parametrize(
    ("file_created", "container_created"),
    [("", "2020-01-01"), ("", "2030-01-01")],
    ids=["older-container", "newer-container"],
)
def test_file_beats_container(file_created: str, container_created: str) -> None:
    f = site("shop.example.com", kind=FILE, source="sites file entry 1", created=file_created)
    c = site("shop.example.com", "www.shop.example.com", source="container shop", created=container_created)
    state = merge([f], [c])
    assert [s.source for s in state.sites] == ["sites file entry 1"]
    assert [p.source for p in state.problems] == ["container shop"]
    assert "sites file entry 1" in state.problems[0].message


def test_file_beats_container_even_with_identical_domains() -> None:
    f = site("shop.example.com", kind=FILE, source="sites file entry 1", upstream=("http", "10.0.0.9", 80))
    c = site("shop.example.com", source="container shop")
    state = merge([f], [c])
    assert [s.upstreams for s in state.sites] == [(Upstream("http", "10.0.0.9", 80),)]
    assert [p.source for p in state.problems] == ["container shop"]


@pytest.mark.parametrize(
    ("a_created", "b_created", "winner"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "container a"),
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "container b"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "container a"),
    ],
    ids=["a-older", "b-older", "tie-by-name"],
)
def test_older_container_wins(a_created: str, b_created: str, winner: str) -> None:
    a = site("x.example.com", source="container a", created=a_created, upstream=("http", "10.0.0.1", 80))
    b = site("x.example.com", "y.example.com", source="container b", created=b_created)
    for order in ([a, b], [b, a]):
        state = merge([], order)
        assert [s.source for s in state.sites] == [winner]
        loser = ({"container a", "container b"} - {winner}).pop()
        assert [p.source for p in state.problems] == [loser]


def test_replicas_merge_into_one_site_with_several_upstreams() -> None:
    reps = [
        site("app.example.com", "www.app.example.com", source=f"container app-{i}", created=f"2026-01-0{i}",
             upstream=("http", f"10.0.0.{i}", 8080))
        for i in (3, 1, 2)
    ]
    state = merge([], reps)
    assert state.problems == ()
    assert len(state.sites) == 1
    only = state.sites[0]
    assert only.source == "container app-1"
    assert only.upstreams == tuple(Upstream("http", f"10.0.0.{i}", 8080) for i in (1, 2, 3))
    assert "replica: container app-2" in only.notes and "replica: container app-3" in only.notes


def test_replicas_with_same_address_are_not_duplicated() -> None:
    a = site("app.example.com", source="container a", created="1")
    b = site("app.example.com", source="container b", created="2")
    assert merge([], [a, b]).sites[0].upstreams == a.upstreams


@pytest.mark.parametrize(
    ("second_domains", "second_scheme"),
    [
        (("app.example.com",), "http"),
        (("www.app.example.com", "app.example.com"), "http"),
        (("app.example.com", "www.app.example.com", "extra.example.com"), "http"),
        (("app.example.com", "www.app.example.com"), "https"),
    ],
    ids=["subset", "reordered", "superset", "other-scheme"],
)
def test_partial_overlap_is_a_problem_naming_both(second_domains: tuple[str, ...], second_scheme: str) -> None:
    first = site("app.example.com", "www.app.example.com", source="container first", created="1")
    second = site(*second_domains, source="container second", created="2",
                  upstream=(second_scheme, "10.0.0.7", 80))
    state = merge([], [second, first])
    assert [s.source for s in state.sites] == ["container first"]
    assert state.sites[0].upstreams == first.upstreams
    assert len(state.problems) == 1
    text = str(state.problems[0])
    assert "container second" in text and "container first" in text
    assert "app.example.com" in text


def test_conflict_does_not_take_down_unrelated_sites() -> None:
    a = site("a.example.com", source="container a", created="1")
    b = site("a.example.com", "b.example.com", source="container b", created="2")
    c = site("c.example.com", source="container c", created="3")
    state = merge([], [a, b, c])
    assert [s.name for s in state.sites] == ["a.example.com", "c.example.com"]
    assert "b.example.com" not in {d for s in state.sites for d in s.domains}


def test_result_is_independent_of_container_order() -> None:
    containers = [
        site("a.example.com", source="container a1", created="2026-01-01", upstream=("http", "10.0.0.1", 80)),
        site("a.example.com", source="container a2", created="2026-01-01", upstream=("http", "10.0.0.2", 80)),
        site("a.example.com", "b.example.com", source="container ab", created="2025-12-31"),
        site("b.example.com", source="container b", created="2026-01-05"),
        site("c.example.com", source="container c", created="2026-01-03"),
        site("c.example.com", source="container c2", created="2026-01-03", upstream=("https", "10.0.0.3", 443)),
    ]
    files = [site("z.example.com", kind=FILE, source="sites file entry 1")]
    results = {merge(files, list(p)) for p in itertools.permutations(containers)}
    assert len(results) == 1
    state = results.pop()
    assert [s.source for s in state.sites] == ["sites file entry 1", "container ab", "container c"]
    assert [p.source for p in state.problems] == ["container a1", "container a2", "container c2",
                                                  "container b"]
