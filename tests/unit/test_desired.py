from __future__ import annotations

import itertools

import pytest

from sidecar.core.desired import merge
from sidecar.core.model import Owner, OwnerKind, Problem, ProblemKind, SourceKind, Upstream

from .builders import site

FILE = SourceKind.FILE
APP = Owner(OwnerKind.COMPOSE, "demo/app")


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
             upstream=("http", f"10.0.0.{i}", 8080), owner=APP)
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
    a = site("app.example.com", source="container a", created="1", owner=APP)
    b = site("app.example.com", source="container b", created="2", owner=APP)
    state = merge([], [a, b])
    assert state.problems == ()
    assert state.sites[0].upstreams == a.upstreams


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
    # Even replicas of one service (a rolling update that changes the label) do not merge.
    first = site("app.example.com", "www.app.example.com", source="container first", created="1", owner=APP)
    second = site(*second_domains, source="container second", created="2",
                  upstream=(second_scheme, "10.0.0.7", 80), owner=APP)
    state = merge([], [second, first])
    assert [s.source for s in state.sites] == ["container first"]
    assert state.sites[0].upstreams == first.upstreams
    assert len(state.problems) == 1
    text = str(state.problems[0])
    assert text.startswith("container second: ")
    assert "container first (Compose service demo/app)" in text
    assert "app.example.com" in text
    assert state.problems[0].kind is ProblemKind.DOMAIN_CONFLICT
    assert state.problems[0].site == "app.example.com"


def test_conflict_does_not_take_down_unrelated_sites() -> None:
    a = site("a.example.com", source="container a", created="1")
    b = site("a.example.com", "b.example.com", source="container b", created="2")
    c = site("c.example.com", source="container c", created="3")
    state = merge([], [a, b, c])
    assert [s.name for s in state.sites] == ["a.example.com", "c.example.com"]
    assert "b.example.com" not in {d for s in state.sites for d in s.domains}


def test_result_is_independent_of_container_order() -> None:
    containers = [
        site("a.example.com", source="container a1", created="2026-01-01", upstream=("http", "10.0.0.1", 80),
             owner=APP),
        site("a.example.com", source="container a2", created="2026-01-01", upstream=("http", "10.0.0.2", 80),
             owner=APP),
        site("a.example.com", "b.example.com", source="container ab", created="2025-12-31"),
        site("b.example.com", source="container b", created="2026-01-05"),
        site("c.example.com", source="container c", created="2026-01-03", owner=APP),
        site("c.example.com", source="container c2", created="2026-01-03", upstream=("https", "10.0.0.3", 443),
             owner=APP),
    ]
    files = [site("z.example.com", kind=FILE, source="sites file entry 1")]
    results = {merge(files, list(p)) for p in itertools.permutations(containers)}
    assert len(results) == 1
    state = results.pop()
    assert [s.source for s in state.sites] == ["sites file entry 1", "container ab", "container c"]
    assert [p.source for p in state.problems] == ["container a1", "container a2", "container c2",
                                                  "container b"]


# -- who may share a site: replicas of one owner only (issue "Failure paths", item 6) ------------

B = ("b.demo.test",)
OWNERS = {
    "compose-app-b": Owner(OwnerKind.COMPOSE, "demo/app-b"),
    "compose-evil": Owner(OwnerKind.COMPOSE, "demo/evil"),
    "compose-other-project": Owner(OwnerKind.COMPOSE, "other/app-b"),
    "swarm-web": Owner(OwnerKind.SWARM, "web"),
    "swarm-api": Owner(OwnerKind.SWARM, "api"),
    "group-shared": Owner(OwnerKind.GROUP, "shared"),
    "group-other": Owner(OwnerKind.GROUP, "other"),
    "container-holder": Owner(OwnerKind.CONTAINER, "holder"),
    "container-claimant": Owner(OwnerKind.CONTAINER, "claimant"),
}


@pytest.mark.parametrize(
    ("holder_owner", "claimant_owner", "shared"),
    [
        ("compose-app-b", "compose-app-b", True),
        ("compose-app-b", "compose-evil", False),
        ("compose-app-b", "compose-other-project", False),
        ("compose-app-b", "container-claimant", False),
        ("swarm-web", "swarm-web", True),
        ("swarm-web", "swarm-api", False),
        ("compose-app-b", "swarm-web", False),
        ("group-shared", "group-shared", True),
        ("compose-app-b", "group-shared", False),
        ("group-shared", "compose-app-b", False),
        ("group-shared", "group-other", False),
        ("container-holder", "container-claimant", False),
        (None, None, False),
    ],
    ids=["compose-replicas", "other-compose-service", "same-service-other-project", "standalone-claimant",
         "swarm-replicas", "other-swarm-service", "swarm-vs-compose", "group-on-both", "group-on-claimant-only",
         "group-on-holder-only", "different-groups", "two-standalone-containers", "no-owner-never-shares"],
)
def test_only_replicas_of_one_owner_share_a_site(
    holder_owner: str | None, claimant_owner: str | None, shared: bool
) -> None:
    holder = site(*B, source="container holder", created="2026-01-01", upstream=("http", "10.0.0.1", 80),
                  owner=OWNERS[holder_owner] if holder_owner else None)
    claimant = site(*B, source="container claimant", created="2026-01-02", upstream=("http", "10.0.0.2", 80),
                    owner=OWNERS[claimant_owner] if claimant_owner else None)
    for order in ([holder, claimant], [claimant, holder]):
        state = merge([], order)
        assert [s.source for s in state.sites] == ["container holder"]
        if shared:
            assert state.problems == ()
            assert state.sites[0].upstreams == holder.upstreams + claimant.upstreams
        else:
            assert state.sites[0].upstreams == holder.upstreams  # the claimant gets no requests
            (p,) = state.problems
            assert (p.source, p.kind, p.site) == ("container claimant", ProblemKind.DOMAIN_CONFLICT, "b.demo.test")
            assert "container holder" in p.message and "b.demo.test" in p.message and "refused" in p.message


def test_a_takeover_is_refused_in_one_line_naming_both_containers() -> None:
    app_b = site(*B, source="container demo-app-b-1", created="2026-01-01T00:00:00Z",
                 owner=Owner(OwnerKind.COMPOSE, "demo/app-b"))
    evil = site(*B, source="container evil", created="2026-01-02T00:00:00Z", upstream=("http", "10.0.0.66", 80),
                owner=Owner(OwnerKind.CONTAINER, "evil"))
    state = merge([], [evil, app_b])
    assert state.sites == (app_b,)
    assert [str(p) for p in state.problems] == [
        "container evil: domain b.demo.test belongs to container demo-app-b-1 (Compose service demo/app-b); "
        "refused (set the same acme.group label on both to share it)"
    ]


@pytest.mark.parametrize(
    ("intruder_created", "winner"),
    [("2026-01-01T00:00:00Z", "container evil"), ("2026-01-03T00:00:00Z", "container demo-app-b-1")],
    ids=["intruder-older", "intruder-newer"],
)
def test_the_older_owner_keeps_the_domain_whatever_the_listing_order(intruder_created: str, winner: str) -> None:
    replicas = [site(*B, source=f"container demo-app-b-{i}", created=f"2026-01-02T00:00:0{i}Z",
                     upstream=("http", f"10.0.0.{i}", 80), owner=Owner(OwnerKind.COMPOSE, "demo/app-b"))
                for i in (1, 2)]
    evil = site(*B, source="container evil", created=intruder_created, upstream=("http", "10.0.0.66", 80),
                owner=Owner(OwnerKind.CONTAINER, "evil"))
    results = {merge([], list(order)) for order in itertools.permutations([*replicas, evil])}
    assert len(results) == 1
    state = results.pop()
    assert [s.source for s in state.sites] == [winner]
    if winner == "container evil":
        assert state.sites[0].upstreams == evil.upstreams
        assert [p.source for p in state.problems] == ["container demo-app-b-1", "container demo-app-b-2"]
        assert "belongs to container evil;" in state.problems[0].message
    else:
        # The intruder, older than the second replica, does not break the replicas' merge either.
        assert state.sites[0].upstreams == tuple(Upstream("http", f"10.0.0.{i}", 80) for i in (1, 2))
        assert [p.source for p in state.problems] == ["container evil"]


def test_sites_file_beats_labels_even_replicas_and_groups() -> None:
    f = site(*B, kind=FILE, source="sites file entry 1", upstream=("http", "10.0.0.9", 80))
    labelled = [site(*B, source=f"container c{i}", created=f"2026-01-0{i}", owner=Owner(OwnerKind.GROUP, "shared"))
                for i in (1, 2)]
    state = merge([f], labelled)
    assert state.sites == (f,)
    assert [str(p) for p in state.problems] == [
        f"container c{i}: domain b.demo.test belongs to sites file entry 1 (the sites file wins over labels); "
        "refused" for i in (1, 2)
    ]
