"""nginx-proxy variables and Traefik labels read as labels (sources/nginxproxy, traefik, compat)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sidecar.core import settings as settings_mod
from sidecar.core.desired import merge
from sidecar.core.model import ContainerInfo, ProblemKind, Site
from sidecar.sources import nginxproxy, traefik
from sidecar.sources.compat import CompatSources
from sidecar.sources.labels import site_from_container
from sidecar.sources.triggers import relevant_event

from .builders import container


# -- nginx-proxy variables -> labels ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "labels", "origins"),
    [
        ({"VIRTUAL_HOST": "a.example.com"}, {"domains": "a.example.com"}, {"domains": "env VIRTUAL_HOST"}),
        ({"VIRTUAL_HOST": "a.example.com,b.example.com", "LETSENCRYPT_HOST": "a.example.com,b.example.com"},
         {"domains": "a.example.com,b.example.com"}, {"domains": "env LETSENCRYPT_HOST"}),
        ({"VIRTUAL_HOST": "a.example.com", "ACME_HOST": "a.example.com", "LETSENCRYPT_HOST": "a.example.com"},
         {"domains": "a.example.com"}, {"domains": "env ACME_HOST"}),
        ({"LETSENCRYPT_HOST": "a.example.com", "VIRTUAL_PORT": "8080", "VIRTUAL_PROTO": "https"},
         {"domains": "a.example.com", "port": "8080", "scheme": "https"},
         {"domains": "env LETSENCRYPT_HOST", "port": "env VIRTUAL_PORT", "scheme": "env VIRTUAL_PROTO"}),
        ({"VIRTUAL_HOST": "a.example.com", "HSTS": "max-age=31536000; includeSubDomains"},
         {"domains": "a.example.com", "hsts": "31536000; includeSubDomains"},
         {"domains": "env VIRTUAL_HOST", "hsts": "env HSTS"}),
        ({"VIRTUAL_HOST": "a.example.com", "HSTS": "off"}, {"domains": "a.example.com", "hsts": "off"},
         {"domains": "env VIRTUAL_HOST", "hsts": "env HSTS"}),
        ({"VIRTUAL_HOST": "a.example.com", "LETSENCRYPT_KEYSIZE": "4096"},
         {"domains": "a.example.com", "key_type": "rsa"},
         {"domains": "env VIRTUAL_HOST", "key_type": "env LETSENCRYPT_KEYSIZE"}),
        ({"VIRTUAL_HOST": "a.example.com", "ACME_KEYSIZE": "ec-256", "ACME_CERT_PROFILE": "tlsserver"},
         {"domains": "a.example.com", "key_type": "ecdsa", "profile": "tlsserver"},
         {"domains": "env VIRTUAL_HOST", "key_type": "env ACME_KEYSIZE", "profile": "env ACME_CERT_PROFILE"}),
        ({"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PATH": "/", "HTTPS_METHOD": "redirect", "CERT_NAME": "shared"},
         {"domains": "a.example.com"}, {"domains": "env VIRTUAL_HOST"}),
    ],
    ids=["virtual-host", "letsencrypt-host", "acme-host-first", "port-proto", "hsts", "hsts-off", "rsa-keysize",
         "ec-keysize-profile", "defaults-spelled-out"],
)
def test_nginx_proxy_variables_map_to_labels(env: dict[str, str], labels: dict[str, str],
                                             origins: dict[str, str]) -> None:
    t = nginxproxy.translate(container("app", labels={}), env)
    assert t is not None and (t.labels, t.origins, t.errors, t.untranslated) == (labels, origins, (), ())


@pytest.mark.parametrize(
    ("env", "source", "says"),
    [
        ({"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PATH": "/api"}, "env VIRTUAL_PATH", "only / is served"),
        ({"VIRTUAL_HOST": "a.example.com", "VIRTUAL_HOST_MULTIPORTS": "a.example.com: {}"},
         "env VIRTUAL_HOST_MULTIPORTS", "acme.* labels"),
        ({"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "sometimes"}, "env HTTPS_METHOD", "must be redirect"),
        ({"VIRTUAL_HOST": "a.example.com", "LETSENCRYPT_KEYSIZE": "1024"}, "env LETSENCRYPT_KEYSIZE", "must be 2048"),
    ],
    ids=["path", "multiports", "https-method", "keysize"],
)
def test_nginx_proxy_values_without_an_equivalent_leave_the_container_out(env: dict[str, str], source: str,
                                                                          says: str) -> None:
    t = nginxproxy.translate(container("app", labels={}), env)
    assert t is not None and t.labels == {} and len(t.errors) == 1
    assert t.errors[0].source == f"container app {source}" and says in t.errors[0].message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LETSENCRYPT_TEST": "true"}, ["LETSENCRYPT_TEST (one CA for every site"]),
        ({"LETSENCRYPT_EMAIL": "other@example.com"}, ["LETSENCRYPT_EMAIL (one ACME account"]),
        ({"LETSENCRYPT_EMAIL": "Ops@Example.com"}, []),  # the sidecar's own address: nothing lost
        ({"HTTPS_METHOD": "noredirect"}, ["HTTPS_METHOD=noredirect (HTTP is always redirected"]),
        ({"HTTPS_METHOD": "nohttp"}, []),
        ({"ACME_EAB_HMAC_KEY": "s3cret-value"}, ["ACME_EAB_HMAC_KEY (one ACME account"]),
        ({"VIRTUAL_HOST": "a.example.com,plain.example.com"}, ["VIRTUAL_HOST plain.example.com (not in LETSENCRYPT"]),
        ({"ACME_RESTART_CONTAINER": "true", "ACME_OCSP": "true"}, ["ACME_OCSP", "ACME_RESTART_CONTAINER"]),
    ],
    ids=["test-ca", "other-email", "same-email", "noredirect", "nohttp", "secret-named-not-shown", "http-only-names",
         "two-ignored"],
)
def test_nginx_proxy_variables_without_an_equivalent_are_named(env: dict[str, str], named: list[str]) -> None:
    t = nginxproxy.translate(container("app", labels={}), {"LETSENCRYPT_HOST": "a.example.com", **env},
                             "ops@example.com")
    assert t is not None and not t.errors
    assert sorted(n.split(" (")[0].split("=")[0] for n in t.untranslated) == sorted(
        n.split(" (")[0].split("=")[0] for n in named)
    for want, got in zip(sorted(named), sorted(t.untranslated)):
        assert got.startswith(want)
    assert not any("s3cret" in n for n in t.untranslated)


def test_a_container_without_host_variables_is_not_nginx_proxys() -> None:
    assert nginxproxy.translate(container("db", labels={}), {"POSTGRES_PASSWORD": "x", "VIRTUAL_PORT": "80"}) is None
    assert nginxproxy.translate(container("db", labels={}), {"VIRTUAL_HOST": "  "}) is None


@pytest.mark.parametrize(
    ("domains", "files", "server", "location"),
    [
        (("a.example.com",), {"a.example.com", "a.example.com_location", "default"},
         ("/v/a.example.com",), ("/v/a.example.com_location",)),
        (("a.example.com", "www.a.example.com"), {"www.a.example.com", "default_location"},
         ("/v/www.a.example.com",), ("/v/default_location",)),
        (("a.example.com",), {"default", "b.example.com"}, ("/v/default",), ()),
        (("a.example.com",), set(), (), ()),
    ],
    ids=["own-files", "second-name-and-default-location", "default", "none"],
)
def test_vhost_d_files_as_nginx_proxy_picks_them(domains: tuple[str, ...], files: set[str],
                                                 server: tuple[str, ...], location: tuple[str, ...]) -> None:
    assert nginxproxy.vhost_includes(domains, "/v", files) == (server, location)


# -- Traefik labels -> labels ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "hosts"),
    [
        ("Host(`a.example.com`)", ["a.example.com"]),
        ("Host(`a.example.com`) || Host(`b.example.com`)", ["a.example.com", "b.example.com"]),
        ("Host(`a.example.com`, `b.example.com`)", ["a.example.com", "b.example.com"]),
        ('(Host("a.example.com") || (Host(`b.example.com`)))', ["a.example.com", "b.example.com"]),
    ],
    ids=["one", "v3-or", "v2-list", "parentheses-and-quotes"],
)
def test_traefik_host_rules_are_read(rule: str, hosts: list[str]) -> None:
    assert traefik.rule_hosts(rule) == hosts


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("Host(`a.example.com`) && PathPrefix(`/api`)", "&& is not translated"),
        ("PathPrefix(`/`)", "PathPrefix is not translated"),
        ("HostRegexp(`^.+\\.example\\.com$`)", "HostRegexp is not translated"),
        ("!Host(`a.example.com`)", "! is not translated"),
        ("Host(`a.example.com`", "expected ) but found 'the end'"),
        ("Host(`a.example.com`) Host(`b`)", "found 'Host'"),
        ("Host(a.example.com)", "cannot read the rule at '.example.com)'"),
    ],
    ids=["path-and", "path", "regexp", "not", "unclosed", "no-operator", "unquoted"],
)
def test_traefik_rules_beyond_host_say_why(rule: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        traefik.rule_hosts(rule)
    assert says in str(info.value)


R = "traefik.http.routers"
S = "traefik.http.services"
M = "traefik.http.middlewares"


@pytest.mark.parametrize(
    ("labels", "expected", "origins", "untranslated"),
    [
        ({f"{R}.web.rule": "Host(`a.example.com`)"}, {"domains": "a.example.com"},
         {"domains": f"label {R}.web.rule"}, []),
        ({"traefik.enable": "true", f"{R}.web.rule": "Host(`a.example.com`) || Host(`www.a.example.com`)",
          f"{R}.web.entrypoints": "websecure", f"{R}.web.tls": "true", f"{R}.web.tls.certresolver": "le",
          f"{S}.web.loadbalancer.server.port": "8080", f"{S}.web.loadbalancer.server.scheme": "https",
          "traefik.docker.network": "web"},
         {"domains": "a.example.com,www.a.example.com", "port": "8080", "scheme": "https", "network": "web"},
         {"domains": f"label {R}.web.rule", "port": f"label {S}.web.loadbalancer.server.port",
          "scheme": f"label {S}.web.loadbalancer.server.scheme", "network": "label traefik.docker.network"}, []),
        ({f"{R}.http.rule": "Host(`a.example.com`)", f"{R}.http.middlewares": "to-https@docker",
          f"{M}.to-https.redirectscheme.scheme": "https", f"{R}.https.rule": "Host(`a.example.com`)",
          f"{R}.https.service": "app", f"{S}.app.loadbalancer.server.port": "80"},
         {"domains": "a.example.com,a.example.com", "port": "80"},
         {"domains": f"label {R}.http.rule", "port": f"label {S}.app.loadbalancer.server.port"}, []),
        ({f"{R}.web.rule": "Host(`a.example.com`)", f"{R}.web.middlewares": "auth,strip",
          f"{M}.auth.basicauth.users": "u:$hash", f"{R}.api.rule": "Host(`a.example.com`) && PathPrefix(`/api`)",
          "traefik.tcp.routers.db.rule": "HostSNI(`*`)", f"{R}.web.tls.domains[0].main": "example.com"},
         {"domains": "a.example.com"}, {"domains": f"label {R}.web.rule"},
         ["TCP and UDP routers", "router api (&& is not translated", "router web tls.domains[0].main",
          "middleware auth (basicauth) of router web", "middleware strip (defined elsewhere) of router web"]),
        ({f"{R}.a.rule": "Host(`a.example.com`)", f"{R}.a.service": "one", f"{R}.b.rule": "Host(`b.example.com`)",
          f"{R}.b.service": "two", f"{S}.one.loadbalancer.server.port": "80",
          f"{S}.two.loadbalancer.server.port": "9000", f"{S}.two.loadbalancer.sticky.cookie": "true"},
         {"domains": "a.example.com", "port": "80"},
         {"domains": f"label {R}.a.rule", "port": f"label {S}.one.loadbalancer.server.port"},
         ["service two loadbalancer.sticky.cookie", "router b (another port or scheme"]),
    ],
    ids=["one-router", "tls-service-network", "http-and-https-routers", "middlewares-paths-tcp", "two-services"],
)
def test_traefik_labels_map_to_labels(labels: dict[str, str], expected: dict[str, str], origins: dict[str, str],
                                      untranslated: list[str]) -> None:
    t = traefik.translate(container("app", labels=labels))
    assert t is not None and not t.errors
    assert (t.labels, t.origins) == (expected, origins)
    assert len(t.untranslated) == len(untranslated), t.untranslated
    for want in untranslated:
        assert any(u.startswith(want) for u in t.untranslated), (want, t.untranslated)
    assert not any("$hash" in u for u in t.untranslated)


@pytest.mark.parametrize(
    ("labels", "result"),
    [
        ({"com.example": "x"}, None),
        ({"traefik.enable": "false", f"{R}.web.rule": "Host(`a.example.com`)"}, None),
        ({"traefik.enable": "true"}, "no Traefik router translated: no traefik.http.routers.<name>.rule label"),
        ({f"{R}.web.rule": "PathPrefix(`/`)"}, "no Traefik router translated: router web (PathPrefix"),
        ({f"{R}.web.rule": "Host(`a.example.com`)", f"{R}.web.service": "api@internal"},
         "no Traefik router translated: router web (service api@internal is not defined"),
        ({f"{R}.web.rule": "Host(`bad_name!.example.com`)"}, "label 'bad_name!'"),
    ],
    ids=["not-traefik", "disabled", "enabled-without-router", "nothing-translatable", "internal-service",
         "bad-host"],
)
def test_traefik_containers_without_a_translatable_router(labels: dict[str, str], result: str | None) -> None:
    t = traefik.translate(container("app", labels=labels))
    if result is None:
        assert t is None
        return
    assert t is not None and len(t.errors) == 1 and t.labels == {}
    assert result in t.errors[0].message
    assert t.errors[0].source.startswith("container app")


# -- the source: translated containers read by the labels' own code ----------------------------------
NGINX = ContainerInfo("id-nginx", "nginx", {"acme.nginx": "true"}, {"web": "172.18.0.2"})


class Envs:
    """A fake Docker inspect: one environment per container id, counting the calls."""

    def __init__(self, envs: dict[str, dict[str, str]]) -> None:
        self.envs, self.calls = envs, []  # type: ignore[var-annotated]

    def __call__(self, cid: str) -> dict[str, str]:
        self.calls.append(cid)
        return self.envs.get(cid, {})


def _settings(tmp_path: Path, **env: str) -> settings_mod.Settings:
    return settings_mod.load({"VHOST_DIR": str(tmp_path / "vhost.d"), **env})


def _app(name: str, labels: dict[str, str] | None = None, service: str | None = None, exposed: tuple[int, ...] = (),
         created: str = "2026-01-01T00:00:00Z") -> ContainerInfo:
    compose = {"com.docker.compose.project": "p", "com.docker.compose.service": service} if service else {}
    return container(name, labels={**compose, **(labels or {})}, exposed=exposed, created=created)


def test_an_nginx_proxy_container_becomes_the_site_its_labels_would_make(tmp_path: Path) -> None:
    (tmp_path / "vhost.d").mkdir()
    (tmp_path / "vhost.d" / "a.example.com").write_text("add_header X-A a;\n")
    (tmp_path / "vhost.d" / "default_location").write_text("expires 1h;\n")
    envs = Envs({"id-app": {"VIRTUAL_HOST": "a.example.com", "LETSENCRYPT_HOST": "a.example.com",
                            "VIRTUAL_PORT": "5678", "HSTS": "max-age=31536000", "DB_PASSWORD": "secret"}})
    source = CompatSources(_settings(tmp_path, COMPAT_NGINX_PROXY="on"), envs)
    view = source.view([NGINX, _app("app", service="app")], None)
    as_labels = site_from_container(
        _app("app", {"acme.domains": "a.example.com", "acme.port": "5678", "acme.hsts": "31536000"}, "app"),
        "acme", ["web"])
    assert isinstance(as_labels, Site) and view.problems == ()
    (site,) = view.sites
    assert (site.domains, site.upstreams, site.owner, site.source) == (
        as_labels.domains, as_labels.upstreams, as_labels.owner, as_labels.source)
    assert site.options.hsts == as_labels.options.hsts and site.options.origin("hsts") == "env HSTS"
    assert site.notes == ("upstream from network web, port from env VIRTUAL_PORT", "from nginx-proxy variables")
    vhost = str(tmp_path / "vhost.d")
    assert (site.includes, site.location_includes) == ((f"{vhost}/a.example.com",), (f"{vhost}/default_location",))
    assert "id-app" in view.relevant_ids
    source.view([NGINX, _app("app", service="app")], None)
    assert envs.calls == ["id-app"]  # one inspect per container, kept while it exists
    assert "DB_PASSWORD" not in source._env["id-app"]  # only nginx-proxy's variables are kept
    source.view([NGINX], None)
    assert source._env == {}


def test_bad_values_read_as_the_labels_errors_but_name_the_variable(tmp_path: Path) -> None:
    envs = Envs({"id-regex": {"VIRTUAL_HOST": "~^app\\..*$"}, "id-port": {"VIRTUAL_HOST": "p.example.com",
                                                                        "VIRTUAL_PORT": "http"},
                 "id-proto": {"VIRTUAL_HOST": "u.example.com", "VIRTUAL_PROTO": "uwsgi"},
                 "id-ok": {"VIRTUAL_HOST": "ok.example.com"},
                 "id-both": {"VIRTUAL_HOST": "both.example.com", "VIRTUAL_PORT": "1"}})
    source = CompatSources(_settings(tmp_path, COMPAT_NGINX_PROXY="on"), envs)
    view = source.view([NGINX, _app("regex"), _app("port"), _app("proto"), _app("ok"),
                        _app("both", {"acme.port": "not-a-port"})], None)
    assert [s.name for s in view.sites] == ["ok.example.com"]
    problems = sorted(str(p) for p in view.problems)
    assert problems[0] == "container both label acme.port: 'not-a-port' is not a port number (1-65535)"
    assert problems[1] == "container port env VIRTUAL_PORT: 'http' is not a port number (1-65535)"
    assert problems[2] == "container proto env VIRTUAL_PROTO: 'uwsgi' must be http or https"
    assert problems[3].startswith("container regex env VIRTUAL_HOST: ") and "'~^app" in problems[3]
    labelled = site_from_container(_app("regex", {"acme.domains": "~^app\\..*$"}), "acme", ["web"])
    assert problems[3].split(": ", 1)[1] == labelled.message  # type: ignore[union-attr]


def test_one_host_in_two_services_is_the_labels_domain_conflict(tmp_path: Path) -> None:
    envs = Envs({"id-first": {"VIRTUAL_HOST": "shop.example.com"}, "id-second": {"VIRTUAL_HOST": "shop.example.com"},
                 "id-replica": {"VIRTUAL_HOST": "shop.example.com"}})
    source = CompatSources(_settings(tmp_path, COMPAT_NGINX_PROXY="on"), envs)
    view = source.view([NGINX, _app("first", service="shop", created="1"), _app("replica", service="shop", created="2"),
                        _app("second", service="evil", created="3")], None)
    state = merge([], list(view.sites), list(view.problems))
    (site,) = state.sites
    assert len(site.upstreams) == 1 and site.notes[-1] == "replica: container replica"  # (same address here)
    (conflict,) = state.problems
    assert conflict.kind is ProblemKind.DOMAIN_CONFLICT and str(conflict) == (
        "container second: domain shop.example.com belongs to container first (Compose service p/shop); refused "
        "(set the same acme.group label on both to share it)")


def test_labels_win_and_traefik_comes_before_nginx_proxy(tmp_path: Path) -> None:
    envs = Envs({cid: {"VIRTUAL_HOST": "env.example.com", "LETSENCRYPT_TEST": "true"}
                 for cid in ("id-labelled", "id-traefik", "id-env")})
    source = CompatSources(_settings(tmp_path, COMPAT_NGINX_PROXY="on", COMPAT_TRAEFIK="on"), envs)
    view = source.view([NGINX, _app("labelled", {"acme.domains": "label.example.com"}),
                        _app("traefik", {f"{R}.w.rule": "Host(`traefik.example.com`)", "acme.tls": "modern"}),
                        _app("env", {"acme.port": "9000"})], None)
    by_source = {s.source: s for s in view.sites}
    assert by_source["container labelled"].domains == ("label.example.com",)
    assert by_source["container traefik"].domains == ("traefik.example.com",)
    assert by_source["container traefik"].options.tls == "modern"  # an acme.* label on top of Traefik's
    assert by_source["container env"].upstreams[0].port == 9000  # the label, not the default
    assert envs.calls == ["id-env"]  # neither the labelled nor the Traefik container was inspected
    (warning,) = view.problems
    assert warning.kind is ProblemKind.WARNING and warning.source == "container env"
    assert warning.message.startswith("nginx-proxy variables not translated: LETSENCRYPT_TEST (")


def test_off_by_default_and_out_of_scope_containers_are_not_read(tmp_path: Path) -> None:
    envs = Envs({"id-app": {"VIRTUAL_HOST": "a.example.com"}, "id-far": {"VIRTUAL_HOST": "far.example.com"}})
    assert CompatSources(_settings(tmp_path), envs).view([NGINX, _app("app")], None).sites == ()
    assert envs.calls == []
    far = dataclasses.replace(_app("far"), networks={"elsewhere": "10.9.0.2"})
    view = CompatSources(_settings(tmp_path, COMPAT_NGINX_PROXY="on", SITES_SCOPE="network"), envs).view(
        [NGINX, _app("app"), far], None)
    assert [s.name for s in view.sites] == ["a.example.com"] and envs.calls == ["id-app"]


def test_a_traefik_warning_names_the_container_once(tmp_path: Path) -> None:
    source = CompatSources(_settings(tmp_path, COMPAT_TRAEFIK="on"), Envs({}))
    view = source.view([NGINX, _app("tr", {f"{R}.w.rule": "Host(`t.example.com`)", f"{R}.w.middlewares": "auth",
                                           f"{M}.auth.basicauth.users": "x"})], None)
    (site,) = view.sites
    assert site.notes[-1] == "from Traefik labels"
    (warning,) = view.problems
    assert str(warning) == ("container tr: Traefik labels not translated: middleware auth (basicauth) of router w")


@pytest.mark.parametrize(
    ("env", "event", "relevant"),
    [
        ({}, {"Type": "container", "Action": "start", "Actor": {"ID": "new", "Attributes": {}}}, False),
        ({"COMPAT_NGINX_PROXY": "on"}, {"Type": "container", "Action": "start",
                                        "Actor": {"ID": "new", "Attributes": {}}}, True),
        ({"COMPAT_NGINX_PROXY": "on"}, {"Type": "container", "Action": "die",
                                        "Actor": {"ID": "new", "Attributes": {}}}, False),
        ({"COMPAT_TRAEFIK": "on"}, {"Type": "container", "Action": "start",
                                    "Actor": {"ID": "new", "Attributes": {f"{R}.w.rule": "Host(`a`)"}}}, True),
        ({}, {"Type": "container", "Action": "start",
              "Actor": {"ID": "new", "Attributes": {f"{R}.w.rule": "Host(`a`)"}}}, False),
    ],
    ids=["off", "nginx-proxy-start", "unknown-die", "traefik-labels", "traefik-off"],
)
def test_events_that_wake_the_loop_in_compat_modes(env: dict[str, str], event: dict[str, Any],
                                                   relevant: bool) -> None:
    assert relevant_event(event, settings_mod.load(env), frozenset()) is relevant


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"COMPAT_NGINX_PROXY": "yes"}, "COMPAT_NGINX_PROXY='yes': must be one of on, off"),
        ({"COMPAT_TRAEFIK": "1"}, "COMPAT_TRAEFIK='1': must be one of on, off"),
        ({"ADOPT_CERTS_DIR": "certs"}, "ADOPT_CERTS_DIR='certs': an absolute path"),
        ({"VHOST_DIR": "/etc/nginx/vhost d"}, "VHOST_DIR='/etc/nginx/vhost d': an absolute path"),
    ],
    ids=["nginx-proxy", "traefik", "adopt-relative", "vhost-space"],
)
def test_bad_compat_settings_stop_the_start(env: dict[str, str], error: str) -> None:
    from sidecar.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        settings_mod.load(env)
    assert str(info.value).startswith(error)


def test_compat_settings() -> None:
    s = settings_mod.load({"COMPAT_NGINX_PROXY": "on", "COMPAT_TRAEFIK": "ON", "ADOPT_CERTS_DIR": "/etc/nginx/certs",
                           "VHOST_DIR": "off"})
    assert (s.compat_nginx_proxy, s.compat_traefik, str(s.adopt_certs_dir), s.vhost_dir) == (
        True, True, "/etc/nginx/certs", None)
    d = settings_mod.load({})
    assert (d.compat_nginx_proxy, d.compat_traefik, d.adopt_certs_dir, str(d.vhost_dir)) == (
        False, False, None, "/etc/nginx/vhost.d")


def test_vhost_d_files_are_included_in_the_server_and_its_location() -> None:
    from sidecar.core.render import NginxTraits, render_site

    from .builders import assert_nginx_syntax_sane, cert, site

    s = dataclasses.replace(site("a.example.com"), includes=("/etc/nginx/vhost.d/a.example.com",),
                            location_includes=("/etc/nginx/vhost.d/default_location",))
    text = render_site(s, cert("a.example.com"), NginxTraits())
    assert_nginx_syntax_sane(text)
    location = text[text.index("location / {"):text.index("}", text.index("location / {"))]
    assert "include /etc/nginx/vhost.d/default_location;" in location
    assert "include /etc/nginx/vhost.d/a.example.com;" in text[text.index("}", text.index("location / {")):]
    assert "vhost.d" not in render_site(site("a.example.com"), cert("a.example.com"), NginxTraits())
