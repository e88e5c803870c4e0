"""No container can take over another's domain (issue "Failure paths", item 6), end to end.

Found by trying it: a container outside app-b's Compose service, labelled with app-b's domain,
was silently added to the site's upstreams and got half of its requests. Now the older owner
keeps the domain, the claimant is refused and reported (``/status`` problems, a
``domain_conflict`` event, a metric), and only a shared ``acme.group`` label shares a site.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from sidecar.core.events import Kind

from .stack import Stack, wait_for

PORT = {"acme.port": "5678"}
REQUESTS = 20


def conflicts_metric(s: Stack, site: str) -> float | None:
    """``nginx_acme_domain_conflicts{site=...}`` from the sidecar's ``/metrics`` (None: no series)."""
    return s.metrics().get(("nginx_acme_domain_conflicts", (("site", site),)))


def bodies(s: Stack, host: str, n: int = REQUESTS) -> list[str]:
    """What ``n`` requests to https://host answer, each on a new connection."""
    answers = []
    for _ in range(n):
        r = s.https(host)
        assert r.status == 200, (r.status, r.body[:200])
        answers.append(r.body.strip())
    return answers


@pytest.fixture
def apps(stack: Stack) -> Iterator[list[Any]]:
    """The containers a test starts, removed when it ends (the stack is shared by the session)."""
    started: list[Any] = []
    yield started
    for c in started:
        c.remove(force=True)


def test_a_container_outside_app_b_cannot_take_over_its_domain(stack: Stack, apps: list[Any]) -> None:
    app_b = stack.container("app-b").name
    assert set(bodies(stack, "b.demo.test", 3)) == {"hello from app-b"}
    since = stack.cursor()

    intruder = stack.run_app("intruder", {"acme.domains": "b.demo.test", **PORT}, "hello from the intruder")
    apps.append(intruder)

    conflict = stack.wait_event(Kind.DOMAIN_CONFLICT, site="b.demo.test", since=since, timeout=30)
    assert conflict.details["source"] == f"container {intruder.name}"
    assert conflict.message == (
        f"container {intruder.name}: domain b.demo.test belongs to container {app_b} "
        f"(Compose service {stack.project}/app-b); refused (set the same acme.group label on both to share it)"
    )
    # The generic input_problem event as for any bad input, and the problem in /status.
    assert [e.message for e in stack.events(since, Kind.INPUT_PROBLEM)] == [conflict.message]
    status = stack.wait_pass(conflict.at)  # the pass that saw the intruder has been applied
    assert conflict.message in status["problems"]
    assert status["rows"]["b.demo.test"]["source"] == f"container {app_b}"
    assert conflicts_metric(stack, "b.demo.test") == 1

    answers = bodies(stack, "b.demo.test")
    assert answers == ["hello from app-b"] * REQUESTS, answers
    assert stack.events(since, Kind.SITE_CHANGED, "b.demo.test") == []

    # The intruder gone, the conflict is resolved everywhere.
    intruder.remove(force=True)
    apps.remove(intruder)
    wait_for("the conflict resolved in /status", lambda: conflict.message not in stack.status()["problems"],
             timeout=30, interval=0.2)
    assert conflicts_metric(stack, "b.demo.test") is None
    assert set(bodies(stack, "b.demo.test", 3)) == {"hello from app-b"}


def test_containers_sharing_an_acme_group_serve_one_site(stack: Stack, apps: list[Any]) -> None:
    host = "shared.demo.test"
    labels = {"acme.domains": host, "acme.group": "shared", **PORT}
    since = stack.cursor()
    one = stack.run_app("shared-1", labels, "hello from shared-1")
    apps.append(one)
    two = stack.run_app("shared-2", labels, "hello from shared-2")
    apps.append(two)
    both = {"hello from shared-1", "hello from shared-2"}

    # nginx balances across both: keep asking until each has answered.
    seen: set[str] = set()
    wait_for(f"both containers answering https://{host}",
             lambda: seen.update(bodies(stack, host, 4)) or seen >= both, timeout=120, interval=0.5)
    assert seen == both
    assert set(bodies(stack, host)) == both
    row = stack.status()["rows"][host]
    assert row["source"] == f"container {one.name}"
    assert stack.events(since, Kind.DOMAIN_CONFLICT) == []

    # Without the label, a third container is refused (acme.group on one side shares nothing).
    since = stack.cursor()
    three = stack.run_app("shared-3", {"acme.domains": host, **PORT}, "hello from shared-3")
    apps.append(three)
    conflict = stack.wait_event(Kind.DOMAIN_CONFLICT, site=host, since=since, timeout=30)
    assert conflict.message == (
        f"container {three.name}: domain {host} belongs to container {one.name} (acme.group=shared); "
        "refused (set the same acme.group label on both to share it)"
    )
    stack.wait_pass(conflict.at)
    assert set(bodies(stack, host)) == both
