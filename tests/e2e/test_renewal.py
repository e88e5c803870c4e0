"""Renewal (issue 3), end to end: Pebble issues 40-second certificates, so the
sidecar must renew them on its own timer, in place, while they keep being served."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from .stack import Stack, dns_names, new_stack, running, wait_for

LIFETIME = 40


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

    # The first reload is logged only after it was verified (and docker logs' "since" has whole-second
    # resolution): let that line go by before counting reloads.
    wait_for("the first 'live' log line", lambda: "site a.demo.test: live on" in s.logs(), timeout=15)
    time.sleep(1.1)
    since = time.time()
    # Renewal is due at half the lifetime (certificates under 10 days) or in the CA's ARI window.
    renewed = wait_for("a renewed certificate being served",
                       lambda: (c := s.https("a.demo.test").cert).serial_number != first.serial_number and c,
                       timeout=LIFETIME * 2, interval=0.5)
    assert dns_names(renewed) == {"a.demo.test", "www.a.demo.test"}
    assert renewed.not_valid_before_utc >= first.not_valid_before_utc
    # Served before the old one expired: no gap in validity.
    assert time.time() < first.not_valid_after_utc.timestamp() + 2

    code, live = s.exec("sidecar", "ls", "/etc/letsencrypt/live")
    assert code == 0
    assert [n for n in live.split() if n.startswith("a.demo.test")] == ["a.demo.test"], live
    code, archive = s.exec("sidecar", "ls", "/etc/letsencrypt/archive/a.demo.test")
    assert "cert2.pem" in archive.split()

    logs = s.logs(since=since)
    assert "site a.demo.test: renewing certificate" in logs
    assert "certificate runs are exec'd in it" not in s.logs()  # a container per run here
    renewals = logs.count("certificate issued in")
    reloads = logs.count("nginx reloaded")
    # One reload per renewal at most: no reload storm.
    assert 1 <= reloads <= renewals, logs[-3000:]
    s.record("renewal_short_lived_reloads_per_renewal", f"{reloads}/{renewals}")
