"""The status page: one small HTML page on the status port (``GET /ui``, and ``GET /`` for browsers).

Rendered on the server from the same documents as ``/status`` and ``/events`` (so it says nothing
they do not), by a pure function: no build step, no CDN, no external file; it works offline and
without JavaScript. A few lines of inline script fetch the page again every ``REFRESH_SECONDS``
and swap its content (a "Pause updates" button stops that); without script a meta refresh does it.

    header   health (ok, degraded, unhealthy) and the last pass
    main     what needs attention (health problems, degraded reasons, failing sites, input problems,
             files set aside); every site: names, source, state, certificate issuer and its lifetime
             as a bar (the renewal point marked), next renewal or attempt and why, last failure and
             certbot's telling line; the CA budget left; nginx reloads; recent events

Accessible: text says everything colours say, contrast of at least 4.5:1 (light and dark), the only
control is a real button, and the table turns into one card per site on a narrow (phone) screen.
``CONTENT_SECURITY_POLICY`` allows exactly the page's own inline style and script (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import datetime
from typing import Any, Mapping, Sequence

REFRESH_SECONDS = 10
RECENT_EVENTS = 30
RELOADS_SHOWN = 10

# (label, tone) of each event kind; tones: good, warn, bad, info
EVENT_KINDS = {
    "site_added": ("site added", "info"),
    "site_changed": ("site changed", "info"),
    "site_removed": ("site removed", "info"),
    "site_live": ("site live", "good"),
    "cert_requested": ("certificate requested", "info"),
    "cert_issued": ("certificate issued", "good"),
    "cert_renewed": ("certificate renewed", "good"),
    "cert_failed": ("certificate request failed", "bad"),
    "cert_postponed": ("request postponed", "warn"),
    "cert_expiring": ("certificate expiring", "warn"),
    "reload": ("nginx reloaded", "good"),
    "nginx_rejected": ("nginx rejected a file", "bad"),
    "conf_set_aside": ("file set aside", "bad"),
    "input_problem": ("input problem", "bad"),
    "domain_conflict": ("domain conflict", "bad"),
    "docker_unavailable": ("Docker unreachable", "bad"),
    "consumer_signalled": ("consumer told", "good"),
    "consumer_failed": ("consumer hook failed", "bad"),
}
STATE_LABELS = {"ok": "OK", "issue": "issuing", "expand": "adding names", "rekey": "replacing key",
                "renew": "renewing", "wait": "waiting"}

STYLE = """
:root { color-scheme: light dark; --bg: #fff; --fg: #1b1b1b; --muted: #555; --line: #d0d0d0; --card: #f6f6f6;
  --good-bg: #dcf2e3; --good: #0b5323; --warn-bg: #fdf0cf; --warn: #5c3f00; --bad-bg: #fbe1e1; --bad: #8a1414;
  --info-bg: #e2ebf8; --info: #163f7a; --track: #e4e4e4; --used: #2f7d4a; --mark: #1b1b1b; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15171a; --fg: #ececec; --muted: #b4b4b4; --line: #3b3f45; --card: #1e2126;
    --good-bg: #173d24; --good: #c7f0d3; --warn-bg: #45360f; --warn: #fbe6b0; --bad-bg: #4a1c1c; --bad: #ffd2d2;
    --info-bg: #1c2f4d; --info: #d3e3fb; --track: #3b3f45; --used: #5fbf80; --mark: #ececec; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; }
header, main, footer { max-width: 84rem; margin: 0 auto; padding: 0.75rem 1rem; }
header { display: flex; flex-wrap: wrap; gap: 0.5rem 1.5rem; align-items: center; justify-content: space-between;
  border-bottom: 1px solid var(--line); }
h1 { font-size: 1.25rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 0.5rem; }
p { margin: 0.25rem 0; }
.muted, small { color: var(--muted); }
.badge { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 0.75rem; font-weight: 600;
  white-space: nowrap; }
.good { background: var(--good-bg); color: var(--good); }
.warn { background: var(--warn-bg); color: var(--warn); }
.bad { background: var(--bad-bg); color: var(--bad); }
.info { background: var(--info-bg); color: var(--info); }
button { font: inherit; padding: 0.3rem 0.8rem; border: 1px solid var(--muted); border-radius: 0.3rem;
  background: var(--card); color: var(--fg); cursor: pointer; }
button:focus-visible { outline: 3px solid var(--info); outline-offset: 2px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: 0.45rem 0.5rem; border-bottom: 1px solid var(--line);
  overflow-wrap: break-word; }
td.long { overflow-wrap: anywhere; min-width: 12rem; }
td.cert { min-width: 12rem; }
time { white-space: nowrap; }
th { font-size: 0.85rem; color: var(--muted); font-weight: 600; }
ul.attention { list-style: none; padding: 0; margin: 0; }
ul.attention li { margin: 0.3rem 0; padding: 0.4rem 0.6rem; border-radius: 0.3rem; }
svg.life { display: block; width: 100%; max-width: 14rem; height: 0.7rem; margin: 0.25rem 0; }
svg.life .track { fill: var(--track); } svg.life .used { fill: var(--used); }
svg.life .used.warn { fill: #b07a00; } svg.life .used.bad { fill: #c62828; }
svg.life .mark { stroke: var(--mark); stroke-width: 1.5; }
code { font-size: 0.9em; }
dl.budgets { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; margin: 0; }
dl.budgets dd { margin: 0; }
footer { border-top: 1px solid var(--line); font-size: 0.9rem; }
@media (max-width: 46rem) {
  table.sites thead { position: absolute; left: -9999px; }
  table.sites, table.sites tbody, table.sites tr, table.sites td { display: block; width: 100%; }
  table.sites tr { border: 1px solid var(--line); border-radius: 0.4rem; margin: 0 0 0.75rem; padding: 0.25rem 0;
    background: var(--card); }
  table.sites td { border: 0; padding: 0.2rem 0.75rem; min-width: 0; }
  table.sites td::before { content: attr(data-label); display: block; font-size: 0.8rem; color: var(--muted);
    font-weight: 600; }
}
""".strip()

SCRIPT = """
(function () {
  var paused = false, button = document.getElementById("pause"), said = document.getElementById("refreshed");
  button.hidden = false;
  button.addEventListener("click", function () {
    paused = !paused;
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? "Resume updates" : "Pause updates";
  });
  function refresh() {
    if (paused || document.hidden) { return; }
    fetch(location.pathname, {headers: {"Accept": "text/html"}, cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      var page = new DOMParser().parseFromString(text, "text/html");
      ["main", "health"].forEach(function (id) {
        var fresh = page.getElementById(id);
        if (fresh) { document.getElementById(id).replaceWith(fresh); }
      });
      document.title = page.title;
      said.textContent = "";
    }).catch(function (e) {
      said.textContent = "The sidecar did not answer (" + e.message + "); trying again.";
    });
  }
  setInterval(refresh, %d);
})();
""".strip() % (REFRESH_SECONDS * 1000)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; "
                           "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def relative(when: datetime, now: datetime) -> str:
    """``in 59d``, ``3m ago``, ``now``."""
    seconds = (when - now).total_seconds()
    size = abs(seconds)
    if size < 5:
        return "now"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if size >= length:
            amount = f"{int(size // length)}{unit}"
            break
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _when(value: str | None, now: datetime, with_date: bool = True, zone: str = "") -> str:
    at = _time(value)
    if at is None:
        return '<span class="muted">–</span>'
    shown = f"{at:%Y-%m-%d %H:%M}" if with_date else f"{at:%H:%M:%S}"
    return f'<time datetime="{_e(at.isoformat())}">{shown}{zone}</time> <small>({relative(at, now)})</small>'


def _state(row: Mapping[str, Any]) -> tuple[str, str]:
    """(label, tone) of a site's state; failures and "not served" are said in words, not only colour."""
    state, failures = str(row.get("state") or ""), int(row.get("failures") or 0)
    label = STATE_LABELS.get(state, state)
    if failures:
        return f"{label}, {failures} failure{'s' if failures != 1 else ''}", "bad"
    if state == "ok":
        return label, "good"
    return label, "warn" if state == "wait" else "info"


def _served(row: Mapping[str, Any]) -> str:
    if str(row.get("source") or "").startswith("consumer "):
        return "certificate only (no vhost)"
    if str(row.get("source") or "").startswith("nginx config "):
        return "served by a hand-written config"
    return "served over HTTPS" if row.get("live") else "not served yet"


def lifetime_bar(row: Mapping[str, Any], now: datetime) -> str:
    """The certificate's validity as a bar: the part used, the renewal point marked; its text in words."""
    start, end = _time(row.get("not_before")), _time(row.get("not_after"))
    if start is None or end is None or end <= start:
        return '<span class="muted">no certificate</span>'
    span = (end - start).total_seconds()
    used = min(max((now - start).total_seconds() / span, 0.0), 1.0)
    renew = _time(row.get("next")) if row.get("state") == "ok" else None
    left = (end - now).total_seconds()
    tone = "bad" if left <= span / 6 else "warn" if renew is not None and now >= renew else ""
    words = f"{used:.0%} of its lifetime used; valid {start:%Y-%m-%d} to {end:%Y-%m-%d}"
    mark = ""
    if renew is not None and start <= renew <= end:
        x = round((renew - start).total_seconds() / span * 100, 1)
        mark = f'<line class="mark" x1="{x}" x2="{x}" y1="0" y2="10"/>'
        words += f", renewal planned {renew:%Y-%m-%d}"
    return (f'<svg class="life" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="{_e(words)}">'
            f'<rect class="track" width="100" height="10"/><rect class="used {tone}" width="{round(used * 100, 1)}" '
            f'height="10"/>{mark}</svg>')


def _site_row(row: Mapping[str, Any], now: datetime) -> str:
    names = [str(n) for n in row.get("names") or []]
    others = [n for n in names if n != row.get("site")]
    label, tone = _state(row)
    why = str(row.get("why") or "").split("; last error:")[0]  # (the error has a column of its own)
    expires = _time(row.get("not_after"))
    cert = lifetime_bar(row, now)
    if expires is not None:
        cert += f'<small>{_e(row.get("issuer") or "")}</small><br>expires {_when(row.get("not_after"), now)}'
    error = '<span class="muted">–</span>'
    if row.get("last_error"):
        error = _e(row["last_error"])
    log = row.get("certbot_log") or {}
    if log and log.get("exit_code") not in (0, None):
        error += f'<br><small>certbot exit {_e(log.get("exit_code"))}: {_e(log.get("last_line") or "")}' \
                 f'<br><code>{_e(log.get("path") or "")}</code></small>'
    return (
        "<tr>"
        f'<td data-label="Site"><strong>{_e(row.get("site"))}</strong>'
        + (f'<br><small>also {_e(", ".join(others))}</small>' if others else "") + "</td>"
        f'<td data-label="Source">{_e(row.get("source") or "")}</td>'
        f'<td data-label="State"><span class="badge {tone}">{_e(label)}</span><br><small>{_served(row)}</small></td>'
        f'<td data-label="Certificate" class="cert">{cert}</td>'
        f'<td data-label="Next">{_when(row.get("next"), now)}<br><small>{_e(why)}</small></td>'
        f'<td data-label="Last failure" class="long">{error}</td>'
        "</tr>"
    )


def _attention(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(tone, text) of everything that needs a person: health, degraded, failing sites, problems, set aside."""
    health = status.get("health") or {}
    items = [("bad", f"Unhealthy: {p}") for p in health.get("problems") or []]
    items += [("warn", f"Degraded: {d}") for d in health.get("degraded") or []]
    for row in status.get("sites") or []:
        if row.get("failures"):
            at = _time(row.get("next"))
            when = f"{at:%Y-%m-%d %H:%M} UTC" if at else "unknown"
            items.append(("bad", f"{row.get('site')}: certificate request failed {row.get('failures')} time(s), "
                                 f"next attempt {when}: {row.get('last_error') or 'no error recorded'}"))
    items += [("bad", f"Input problem: {p}") for p in status.get("problems") or []]
    items += [("bad", f"Set aside: {f} ({e})") for f, e in (status.get("set_aside") or {}).items()]
    return items


def _event_row(e: Mapping[str, Any], now: datetime) -> str:
    label, tone = EVENT_KINDS.get(str(e.get("kind")), (str(e.get("kind")), "info"))
    at = _time(e.get("at"))
    when = f'<time datetime="{_e(at.isoformat())}">{at:%m-%d %H:%M:%S}</time>' if at else ""
    return (f'<tr><td data-label="When">{when}</td><td data-label="What"><span class="badge {tone}">{_e(label)}'
            f'</span></td><td data-label="Site">{_e(e.get("site") or "")}</td>'
            f'<td data-label="Details" class="long">{_e(_details(e))}</td></tr>')


def _details(e: Mapping[str, Any]) -> str:
    """What an event says beyond its kind."""
    d = e.get("details") or {}
    if e.get("kind") == "reload":
        written, removed = d.get("written") or [], d.get("removed") or []
        return (f"{len(written)} file{'s' if len(written) != 1 else ''} written"
                + (f" ({', '.join(map(str, written[:3]))}{', ...' if len(written) > 3 else ''})" if written else "")
                + f", {len(removed)} removed")
    return str(e.get("message") or "")


def _events_table(rows: Sequence[Mapping[str, Any]], now: datetime, empty: str) -> str:
    if not rows:
        return f'<p class="muted">{empty}</p>'
    return ('<table class="sites events"><thead><tr><th scope="col">When (UTC)</th><th scope="col">What</th>'
            '<th scope="col">Site</th><th scope="col">Details</th></tr></thead><tbody>'
            + "".join(_event_row(e, now) for e in rows) + "</tbody></table>")


def _order(row: Mapping[str, Any]) -> tuple[int, str]:
    return (0 if row.get("failures") else 1 if row.get("state") != "ok" else 2, str(row.get("site")))


def render_page(status: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """The whole page from ``/status`` and ``/events`` documents (already redacted), times in UTC."""
    health = status.get("health") or {}
    verdict = str(health.get("status") or "unknown")
    tone = {"ok": "good", "degraded": "warn"}.get(verdict, "bad")
    sites = sorted(status.get("sites") or [], key=_order)
    failing = sum(1 for r in sites if r.get("failures"))
    attention = _attention(status)
    newest = list(reversed(events))
    reloads = [e for e in newest if e.get("kind") in ("reload", "nginx_rejected")][:RELOADS_SHOWN]
    budgets = status.get("rate_limit_budgets") or {}
    title = f"nginx-acme-sidecar: {len(sites)} site{'s' if len(sites) != 1 else ''}" + (
        f", {failing} failing" if failing else "") + ("" if verdict == "ok" else f", {verdict}")

    out = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS * 3}"></noscript>',
        f'<title>{_e(title)}</title><link rel="icon" href="data:,"><style>{STYLE}</style></head><body>',
        '<header><h1>nginx-acme-sidecar</h1>',
        f'<p id="health"><span class="badge {tone}">{_e(verdict)}</span> last pass '
        f'{_when(health.get("last_pass"), now, with_date=False, zone=" UTC")}</p>',
        '<p><button id="pause" type="button" aria-pressed="false" hidden>Pause updates</button> '
        '<span id="refreshed" role="status"></span></p></header>',
        '<main id="main">',
    ]
    if attention:
        out.append('<section aria-labelledby="h-attention"><h2 id="h-attention">Needs attention</h2>'
                   '<ul class="attention">' + "".join(f'<li class="{t}">{_e(text)}</li>' for t, text in attention)
                   + "</ul></section>")
    out.append(f'<section aria-labelledby="h-sites"><h2 id="h-sites">Sites ({len(sites)})</h2>')
    if sites:
        out.append('<table class="sites"><thead><tr><th scope="col">Site</th><th scope="col">Source</th>'
                   '<th scope="col">State</th><th scope="col">Certificate</th><th scope="col">Next (UTC) and why</th>'
                   '<th scope="col">Last failure</th></tr></thead><tbody>'
                   + "".join(_site_row(r, now) for r in sites) + "</tbody></table>")
    else:
        out.append('<p class="muted">No sites yet. Label a container with acme.domains=example.com, or list one '
                   "in the sites file.</p>")
    out.append("</section>")
    out.append('<section aria-labelledby="h-budgets"><h2 id="h-budgets">CA budget left</h2>')
    if budgets:
        out.append('<dl class="budgets">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                                                     for k, v in sorted(budgets.items())) + "</dl>")
    else:
        out.append('<p class="muted">No rate limits are tracked for this CA (RATE_LIMITS).</p>')
    out.append("</section>")
    out.append('<section aria-labelledby="h-reloads"><h2 id="h-reloads">nginx reloads</h2>'
               + _events_table(reloads, now, "No reload since the sidecar started.") + "</section>")
    out.append(f'<section aria-labelledby="h-events"><h2 id="h-events">Recent events</h2>'
               + _events_table(newest[:RECENT_EVENTS], now, "No events since the sidecar started.") + "</section>")
    out.append(f'<p class="muted">Page made {now:%Y-%m-%d %H:%M:%S} UTC; it refreshes every {REFRESH_SECONDS} s.'
               "</p></main>")
    out.append('<footer>The same as JSON: <a href="/status">/status</a> · <a href="/events?since=0">/events</a> · '
               '<a href="/plan">/plan</a> · <a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></footer>')
    out.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "".join(out)
