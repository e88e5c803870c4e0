from __future__ import annotations

import pytest

from sidecar.core.desired import merge
from sidecar.sources.labels import site_from_container, sites_from_containers
from sidecar.core.model import ContainerInfo, Owner, OwnerKind, Problem, ProblemKind, Site, SourceKind, Upstream

from .builders import container

NGINX_NETS = ("web", "zeta")


def _site(result: Site | Problem | None) -> Site:
    assert isinstance(result, Site), result
    return result


def _problem(result: Site | Problem | None) -> Problem:
    assert isinstance(result, Problem), result
    return result


def test_unlabelled_container_is_ignored() -> None:
    assert site_from_container(container(labels={"com.example.x": "1"}), "acme", NGINX_NETS) is None
    # other acme.* labels without acme.domains do not make a site either
    assert site_from_container(container(labels={"acme.port": "8080"}), "acme", NGINX_NETS) is None


def test_labelled_container_becomes_a_site() -> None:
    c = container("shop", {"acme.domains": "Shop.Example.com, www.shop.example.com"},
                  created="2026-02-03T04:05:06Z")
    s = _site(site_from_container(c, "acme", NGINX_NETS))
    assert s.domains == ("shop.example.com", "www.shop.example.com")
    assert s.name == "shop.example.com"
    assert s.upstreams == (Upstream("http", "172.18.0.5", 80),)
    assert s.source == "container shop"
    assert s.source_kind is SourceKind.CONTAINER
    assert s.created == "2026-02-03T04:05:06Z"


@pytest.mark.parametrize(
    ("labels", "exposed", "port"),
    [
        ({"acme.port": "8080"}, (), 8080),
        ({"acme.port": " 3000 "}, (5000,), 3000),
        ({"acme.port": "8080"}, (3000, 4000), 8080),
        ({}, (5000,), 5000),
        ({}, (), 80),
        ({}, (3000, 4000), 80),
        ({"acme.port": "1"}, (), 1),
        ({"acme.port": "65535"}, (), 65535),
    ],
    ids=["label", "label-beats-exposed", "label-beats-many", "single-exposed", "default-80",
         "several-exposed-default-80", "min", "max"],
)
def test_port_selection(labels: dict[str, str], exposed: tuple[int, ...], port: int) -> None:
    c = container(labels={"acme.domains": "app.example.com", **labels}, exposed=exposed)
    assert _site(site_from_container(c, "acme", NGINX_NETS)).upstreams[0].port == port


@pytest.mark.parametrize(
    "raw",
    ["0", "65536", "99999999", "-1", "80a", "", "8080/tcp", "http", "٨٠", "８０", "²"],
    ids=["zero", "too-big", "very-big", "negative", "suffix", "empty", "proto", "word", "arabic-digits",
         "fullwidth-digits", "superscript"],
)
def test_bad_port_is_a_problem_on_the_port_label(raw: str) -> None:
    c = container("api", {"acme.domains": "api.example.com", "acme.port": raw})
    p = _problem(site_from_container(c, "acme", NGINX_NETS))
    assert p.source == "container api label acme.port"
    assert "port number" in p.message


def test_unknown_label_names_container_and_label() -> None:
    c = container("api", {"acme.domains": "api.example.com", "acme.prot": "8080"})
    p = _problem(site_from_container(c, "acme", NGINX_NETS))
    assert p.source == "container api label acme.prot"
    assert "unknown label" in p.message and "acme.port" in p.message


def test_nginx_marker_label_is_not_unknown() -> None:
    c = container("api", {"acme.domains": "api.example.com", "acme.nginx": "true"})
    assert isinstance(site_from_container(c, "acme", NGINX_NETS), Site)


def test_bad_domains_label_is_a_problem() -> None:
    c = container("api", {"acme.domains": "api.example.com, *.example.com"})
    p = _problem(site_from_container(c, "acme", NGINX_NETS))
    assert p.source == "container api label acme.domains"
    assert "wildcard" in p.message


@pytest.mark.parametrize(
    ("raw", "scheme"),
    [(None, "http"), ("http", "http"), ("https", "https"), (" HTTPS ", "https")],
    ids=["default", "http", "https", "case-and-space"],
)
def test_scheme(raw: str | None, scheme: str) -> None:
    labels = {"acme.domains": "app.example.com"} | ({"acme.scheme": raw} if raw is not None else {})
    s = _site(site_from_container(container(labels=labels), "acme", NGINX_NETS))
    assert s.upstream_scheme == scheme


@pytest.mark.parametrize("raw", ["ftp", "h2c", "", "http://"], ids=["ftp", "h2c", "empty", "url"])
def test_bad_scheme(raw: str) -> None:
    c = container("api", {"acme.domains": "api.example.com", "acme.scheme": raw})
    p = _problem(site_from_container(c, "acme", NGINX_NETS))
    assert p.source == "container api label acme.scheme"
    assert "http or https" in p.message


@pytest.mark.parametrize(
    ("networks", "label", "nginx_nets", "expected"),
    [
        ({"web": "10.1.0.2", "zeta": "10.2.0.2"}, "zeta", ("web", "zeta"), "10.2.0.2"),
        ({"zeta": "10.2.0.2", "web": "10.1.0.2", "alpha": "10.3.0.2"}, None, ("zeta", "web"), "10.1.0.2"),
        ({"backend": "10.9.0.2", "zeta": "10.2.0.2"}, None, ("zeta", "web"), "10.2.0.2"),
        ({"web": "10.1.0.2"}, " web ", ("web",), "10.1.0.2"),
    ],
    ids=["explicit", "first-shared-sorted", "only-shared", "explicit-stripped"],
)
def test_network_selection(
    networks: dict[str, str], label: str | None, nginx_nets: tuple[str, ...], expected: str
) -> None:
    labels = {"acme.domains": "app.example.com"} | ({"acme.network": label} if label else {})
    s = _site(site_from_container(container(labels=labels, networks=networks), "acme", nginx_nets))
    assert s.upstreams[0].host == expected


@pytest.mark.parametrize(
    ("networks", "label", "nginx_nets", "source", "words"),
    [
        ({"web": "10.1.0.2"}, "other", ("web", "other"), "container api label acme.network",
         "container is not attached to network 'other'"),
        ({"web": "10.1.0.2", "backend": "10.9.0.2"}, "backend", ("web",), "container api label acme.network",
         "nginx is not attached to network 'backend'"),
        ({"backend": "10.9.0.2"}, None, ("web", "edge"), "container api",
         "shares no network with nginx (nginx is on: edge, web)"),
        ({"backend": "10.9.0.2"}, None, (), "container api", "nginx is on: none"),
        ({"web": ""}, None, ("web",), "container api", "has no IP address on network web"),
    ],
    ids=["container-not-attached", "nginx-not-attached", "no-shared-network", "nginx-on-nothing", "no-address"],
)
def test_network_problems(
    networks: dict[str, str], label: str | None, nginx_nets: tuple[str, ...], source: str, words: str
) -> None:
    labels = {"acme.domains": "api.example.com"} | ({"acme.network": label} if label else {})
    p = _problem(site_from_container(container("api", labels, networks), "acme", nginx_nets))
    assert p.source == source
    assert words in p.message


def test_first_shared_network_is_the_alphabetically_first() -> None:
    names = [f"net-{c}" for c in "qwertyuiopasdfghjklz"]
    networks = {n: f"10.0.{i}.2" for i, n in enumerate(names)}
    s = _site(site_from_container(container(networks=networks), "acme", list(reversed(names)) + ["other"]))
    assert s.upstreams[0].host == networks["net-a"]
    assert "network net-a" in s.notes[0]


def test_prefix_is_configurable() -> None:
    c = container("api", {"acme.domains": "old.example.com", "tls.domains": "api.example.com", "tls.port": "81"})
    s = _site(site_from_container(c, "tls", NGINX_NETS))
    assert s.domains == ("api.example.com",) and s.upstreams[0].port == 81
    # with prefix "tls", acme.* labels are someone else's business
    c2 = container("other", {"acme.domains": "x.example.com", "acme.bogus": "1"})
    assert site_from_container(c2, "tls", NGINX_NETS) is None
    # and a "tls.*" label unknown to the sidecar is named with the configured prefix
    p = _problem(site_from_container(container("api", {"tls.domains": "a.example.com", "tls.x": "1"}), "tls",
                                     NGINX_NETS))
    assert p.source == "container api label tls.x" and "tls.port" in p.message


def test_sites_from_containers_skips_stopped_and_unlabelled_and_collects_problems() -> None:
    containers = [
        container("b", {"acme.domains": "b.example.com"}, created="2026-01-02"),
        container("a", {"acme.domains": "a.example.com"}, created="2026-01-03"),
        container("stopped", {"acme.domains": "stopped.example.com"}, running=False),
        container("stopped-bad", {"acme.domains": "*.bad"}, running=False),
        container("plain", {}),
        container("bad", {"acme.domains": "bad.example.com", "acme.port": "x"}),
    ]
    sites, problems = sites_from_containers(containers, "acme", {"web": "172.18.0.2"})
    assert [s.source for s in sites] == ["container b", "container a"]  # oldest first
    assert [p.source for p in problems] == ["container bad label acme.port"]


BAD_VALUES = ["x\ny", "x\r\nnginx: [emerg] injected", "a\u2028b"]


@pytest.mark.parametrize(
    "labels",
    [
        {"acme.domains": "ok.example.com\nevil.example.com\nbad_name"},
        {"acme.domains": "ok.example.com", "acme.port": BAD_VALUES[1]},
        {"acme.domains": "ok.example.com", "acme.scheme": BAD_VALUES[0]},
        {"acme.domains": "ok.example.com", "acme.network": BAD_VALUES[1]},
        {"acme.domains": "ok.example.com", "acme.network": BAD_VALUES[2]},
        {"acme.domains": "ok.example.com\u2028x"},
        {"acme.domains": "ok.example.com", "acme.x\nERROR forged line": "1"},
        {"acme.domains": "ok.example.com", "acme.group": BAD_VALUES[1]},
    ],
    ids=["domains", "port", "scheme", "network", "network-unicode-separator", "domains-unicode-separator",
         "unknown-key", "group"],
)
def test_problem_messages_are_one_line_and_name_the_container(labels: dict[str, str]) -> None:
    p = _problem(site_from_container(container("weird-app", labels), "acme", NGINX_NETS))
    text = str(p)
    assert len(text.splitlines()) == 1, text
    assert text.startswith("container weird-app")


# -- owners: who may share a site (issue "Failure paths", item 6) ------------------------------

COMPOSE_B = {"com.docker.compose.project": "demo", "com.docker.compose.service": "app-b"}
SWARM_WEB = {"com.docker.swarm.service.name": "web", "com.docker.swarm.task.name": "web.1.x"}


@pytest.mark.parametrize(
    ("labels", "owner"),
    [
        ({}, Owner(OwnerKind.CONTAINER, "app-1")),
        (COMPOSE_B, Owner(OwnerKind.COMPOSE, "demo/app-b")),
        ({"com.docker.compose.project": "demo"}, Owner(OwnerKind.CONTAINER, "app-1")),
        ({"com.docker.compose.service": "app-b"}, Owner(OwnerKind.CONTAINER, "app-1")),
        (SWARM_WEB, Owner(OwnerKind.SWARM, "web")),
        ({"acme.group": " shared "}, Owner(OwnerKind.GROUP, "shared")),
        ({**COMPOSE_B, "acme.group": "shared"}, Owner(OwnerKind.GROUP, "shared")),
        ({**SWARM_WEB, "acme.group": "Shared_2.x-y"}, Owner(OwnerKind.GROUP, "Shared_2.x-y")),
    ],
    ids=["standalone", "compose", "compose-project-only", "compose-service-only", "swarm", "group",
         "group-beats-compose", "group-beats-swarm"],
)
def test_owner_from_labels(labels: dict[str, str], owner: Owner) -> None:
    c = container("app-1", {"acme.domains": "app.example.com", **labels})
    assert _site(site_from_container(c, "acme", NGINX_NETS)).owner == owner


@pytest.mark.parametrize("raw", ["", "  ", "a b", "-x", ".x", "x/y", "x" * 64, "caf\u00e9"],
                         ids=["empty", "blank", "space", "leading-dash", "leading-dot", "slash", "too-long",
                              "non-ascii"])
def test_bad_group_is_a_problem_on_the_group_label(raw: str) -> None:
    c = container("api", {"acme.domains": "api.example.com", "acme.group": raw})
    p = _problem(site_from_container(c, "acme", NGINX_NETS))
    assert p.source == "container api label acme.group"
    assert "group name" in p.message


def _claim(name: str, created: str, address: str, **labels: str) -> ContainerInfo:
    return container(name, {"acme.domains": "b.demo.test", "acme.port": "5678", **labels},
                     networks={"web": address}, created=created)


HOLDER = "2026-01-01T00:00:00Z"
LATER = "2026-01-02T00:00:00Z"


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        (COMPOSE_B, COMPOSE_B, True),
        (COMPOSE_B, {"com.docker.compose.project": "demo", "com.docker.compose.service": "evil"}, False),
        (COMPOSE_B, {}, False),
        (SWARM_WEB, {**SWARM_WEB, "com.docker.swarm.task.name": "web.2.y"}, True),
        (SWARM_WEB, {"com.docker.swarm.service.name": "api"}, False),
        ({**COMPOSE_B, "acme.group": "shop"}, {"acme.group": "shop"}, True),
        ({"acme.group": "shop"}, {"acme.group": "shop"}, True),
        ({**COMPOSE_B, "acme.group": "shop"}, {}, False),
        (COMPOSE_B, {"acme.group": "shop"}, False),
        ({"acme.group": "shop"}, {"acme.group": "blog"}, False),
        ({}, {}, False),
    ],
    ids=["compose-replicas", "other-compose-service", "standalone-intruder", "swarm-replicas",
         "other-swarm-service", "group-on-both-across-services", "group-on-both-standalone",
         "group-on-holder-only", "group-on-claimant-only", "different-groups", "two-standalone"],
)
def test_containers_share_a_domain_only_as_one_owner(
    first: dict[str, str], second: dict[str, str], shared: bool
) -> None:
    """From labels to the merged state, as the engine does it."""
    containers = [_claim("second", LATER, "172.18.0.7", **second), _claim("first", HOLDER, "172.18.0.6", **first)]
    sites, problems = sites_from_containers(containers, "acme", NGINX_NETS)
    assert problems == []
    state = merge([], sites)
    (only,) = state.sites
    assert only.source == "container first"
    if shared:
        assert state.problems == ()
        assert [u.host for u in only.upstreams] == ["172.18.0.6", "172.18.0.7"]
    else:
        assert [u.host for u in only.upstreams] == ["172.18.0.6"]
        (p,) = state.problems
        assert p.kind is ProblemKind.DOMAIN_CONFLICT
        text = str(p)
        assert len(text.splitlines()) == 1
        assert text.startswith("container second: domain b.demo.test belongs to container first")
        assert text.endswith("refused (set the same acme.group label on both to share it)")


def test_conflict_message_names_the_owner_and_the_configured_group_label() -> None:
    containers = [
        container("demo-app-b-1", {"tls.domains": "b.demo.test", **COMPOSE_B}, created=HOLDER),
        container("evil", {"tls.domains": "b.demo.test", "tls.group": "demo"}, created=LATER),
    ]
    sites, _ = sites_from_containers(containers, "tls", NGINX_NETS)
    assert [str(p) for p in merge([], sites).problems] == [
        "container evil: domain b.demo.test belongs to container demo-app-b-1 (Compose service demo/app-b); "
        "refused (set the same tls.group label on both to share it)"
    ]
