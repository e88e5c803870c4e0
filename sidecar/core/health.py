"""Is the sidecar healthy? One answer, whether it comes from the running process or its status file."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Sequence

from sidecar.core.names import iso

# A pass runs at least every 5 minutes (timer) and may include certbot runs of up to
# CERTBOT_TIMEOUT; older than this means the loop is stuck.
HEALTH_MAX_AGE = timedelta(minutes=15)


def assess(last_pass: datetime | None, sites: int, docker_ok: bool, docker_error: str, now: datetime,
           max_age: timedelta = HEALTH_MAX_AGE, starting: str = "starting: no reconcile pass has finished yet",
           degraded: Sequence[str] = ()) -> tuple[bool, dict[str, Any]]:
    """Liveness and readiness in one: a recent pass, and Docker reachable on the last one.

    ``degraded``: the sidecar works but not fully (its event watcher reconnecting, ...): still
    healthy (a restart would not help), status "degraded" with the reasons."""
    doc: dict[str, Any] = {"docker": docker_ok, "last_pass": iso(last_pass)}
    problems = []
    if last_pass is None:
        problems.append(starting)
    else:
        age = (now - last_pass).total_seconds()
        doc["last_pass_age_seconds"] = round(age, 1)
        doc["sites"] = sites
        if age > max_age.total_seconds():
            problems.append(f"the last pass finished {int(age)}s ago (more than {int(max_age.total_seconds())}s)")
    if not docker_ok:
        problems.append(f"Docker API unreachable: {docker_error}")
    doc["status"] = "unhealthy" if problems else "degraded" if degraded else "ok"
    if problems:
        doc["problems"] = problems
    if degraded:
        doc["degraded"] = list(degraded)
    return not problems, doc
