"""Renewal (issue 3), end to end: Pebble issues 40-second certificates, so the
sidecar must renew them on its own timer, in place, while they keep being served."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.core.events import Kind

from .stack import Stack, dns_names, new_stack, running, wait_for

LIFETIME = 40
OWNER_LABEL = "nginx-acme-sidecar.owner"
SITE_LABEL = "nginx-acme-sidecar.site"  # on the container of each certbot run (CERTBOT_RUNNER=container)


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = new_stack(Path(tmp_path_factory.mktemp("renewal")))
    s.env["PEBBLE_CERT_VALIDITY"] = str(LIFETIME)
    # The other stacks exec certbot in one long-lived container; this one keeps the
    # container-per-run way working (CERTBOT_RUNNER=container).
    s.env["CERTBOT_RUNNER"] = "container"
    s.write_sites("sites: []\n")
    with running(s, ["a.demo.test"], "--scale", "app-b=0"):
        yield s


def test_short_lived_certificate_is_renewed_in_place_and_served(short_lived: Stack) -> None:
    s = short_lived
    first = s.https("a.demo.test").cert
    lifetime = (first.not_valid_after_utc - first.not_valid_before_utc).total_seconds()
    assert lifetime <= LIFETIME + 1

    # Counted from the first certificate's 'live' event on (its reload came before it).
    s.wait_event(Kind.SITE_LIVE, "a.demo.test", timeout=15)
    since = s.cursor()
    owner = s.container("sidecar").name
    created: list[dict[str, Any]] = []  # the sidecar's certbot containers created from now on
    stream = s.client.events(decode=True, filters={"type": "container", "event": "create",
                                                   "label": f"{OWNER_LABEL}={owner}"})
    watcher = threading.Thread(target=lambda: created.extend(stream), daemon=True)
    watcher.start()
    try:
        # Renewal is due at half the lifetime (certificates under 10 days) or in the CA's ARI window.
        renewed = wait_for("a renewed certificate being served",
                           lambda: (c := s.https("a.demo.test").cert).serial_number != first.serial_number and c,
                           timeout=LIFETIME * 2, interval=0.5)
        s.wait_event(Kind.RELOAD, since=since, timeout=10)  # (emitted once the reload was verified)
    finally:
        until = s.cursor()  # the events up to the end of the container watch
        stream.close()
        watcher.join(5)
    assert dns_names(renewed) == {"a.demo.test", "www.a.demo.test"}
    assert renewed.not_valid_before_utc >= first.not_valid_before_utc
    # Served before the old one expired: no gap in validity.
    assert time.time() < first.not_valid_after_utc.timestamp() + 2

    code, live = s.exec("sidecar", "ls", "/etc/letsencrypt/live")
    assert code == 0
    assert [n for n in live.split() if n.startswith("a.demo.test")] == ["a.demo.test"], live
    code, archive = s.exec("sidecar", "ls", "/etc/letsencrypt/archive/a.demo.test")
    assert "cert2.pem" in archive.split()

    window = s.history[since:until]
    assert {e.details["action"] for e in window if e.kind == Kind.CERT_REQUESTED} == {"renew"}
    renewals = len([e for e in window if (e.kind, e.site) == (Kind.CERT_RENEWED, "a.demo.test")])
    assert renewals >= 1 and not [e for e in window if e.kind == Kind.CERT_ISSUED]
    reloads = len([e for e in window if e.kind == Kind.RELOAD])
    # One reload per renewal at most: no reload storm.
    assert 1 <= reloads <= renewals, [(e.kind, e.site) for e in window]
    s.record("renewal_short_lived_reloads_per_renewal", f"{reloads}/{renewals}")

    # A container per certbot run here (labelled with its site), and no long-lived certbot
    # container, which CERTBOT_RUNNER=exec would keep running next to the sidecar.
    assert len(created) >= renewals, created
    assert all(e["Actor"]["Attributes"].get(SITE_LABEL) == "a.demo.test" for e in created), created
    kept = s.client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})
    assert all(SITE_LABEL in c.labels for c in kept), [c.name for c in kept]
