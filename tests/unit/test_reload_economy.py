"""nginx is reloaded only when its configuration changes, and once per change (issue 14, item 7).

Every ``nginx -s reload`` closes every keep-alive connection nginx holds; a client that sends a
request on one at that moment gets no answer (``bench/keepalive.py`` measures about one per busy
connection per reload). So a change nginx's configuration does not see must cost no reload, and one
it does see exactly one. Run with the loop's fakes (``test_loop``): real passes, counted
``nginx -s reload`` execs.
"""

from __future__ import annotations

from pathlib import Path

from sidecar.core.events import Kind
from sidecar.core.model import ContainerInfo

from .test_loop import _no_psl, app, make  # noqa: F401 - (_no_psl: its autouse fixture)

SITES = "sites:\n  - domains: [f.example.com]\n    upstream: http://10.0.0.5:8080\n"


def test_changes_nginx_does_not_see_cost_no_reload(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yml"
    sites.write_text(SITES)
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")], sites_file=sites)
    r.run_pass()
    assert sorted(certbot.runs) == ["a.example.com", "f.example.com"]
    reloads = docker.reloads

    # The app container re-created (a new id, the same labels and address).
    docker.containers = [c if c.name != "a" else ContainerInfo(id="z" * 64, name="a", labels=c.labels,
                                                                networks=c.networks) for c in docker.containers]
    r.run_pass()
    # A container without labels comes and goes.
    docker.containers.append(ContainerInfo(id="u" * 64, name="db", labels={}, networks={"web": "10.0.0.7"}))
    r.run_pass()
    docker.containers.pop()
    r.run_pass()
    # The sites file rewritten with the same sites (a comment, other formatting).
    sites.write_text("# edited\nsites:\n  - {domains: [f.example.com], upstream: 'http://10.0.0.5:8080'}\n")
    r.run_pass()
    # A new site whose certificate request fails: its pending page changes, nginx's config does not.
    certbot.fail["b.example.com"] = "Some challenges have failed.\nDetail: Invalid response from http://b.example.com"
    docker.containers.append(app("b", "b.example.com"))
    r.run_pass()
    assert Kind.CERT_FAILED in seen.kinds("b.example.com")

    assert docker.reloads == reloads
    assert certbot.runs.count("a.example.com") == 1  # (and nothing was issued again)


def test_a_change_nginx_sees_costs_one_reload(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com"), app("b", "b.example.com")])
    r.run_pass()

    def one_reload(change: str) -> None:
        before = docker.reloads
        r.run_pass()
        assert docker.reloads == before + 1, change

    r.request_renewal("b.example.com", force=True)  # a renewed certificate
    one_reload("renewal")
    assert Kind.CERT_RENEWED in seen.kinds("b.example.com")
    docker.containers.append(app("c", "c.example.com"))  # a new site, once its certificate is there
    one_reload("new site")
    docker.containers = [c for c in docker.containers if c.name != "b"]  # a site gone
    one_reload("site removed")
