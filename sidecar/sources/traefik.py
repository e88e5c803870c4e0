"""Traefik's HTTP router labels on a container -> the labels they stand for. Pure, read-only.

With ``COMPAT_TRAEFIK=on`` a container without ``acme.domains`` that carries
``traefik.http.routers.<r>.rule`` labels (and not ``traefik.enable=false``) is read as if it
carried ``acme.*`` labels (those it does carry win):

- ``rule``: ``Host(`a`) || Host(`b`)`` (v3) or ``Host(`a`, `b`)`` (v2) -> ``acme.domains``;
- the router's service (``.service``, else the container's only one):
  ``traefik.http.services.<s>.loadbalancer.server.port`` / ``.scheme`` -> ``acme.port`` / ``acme.scheme``;
- ``traefik.docker.network`` -> ``acme.network``;
- ``entrypoints``, ``priority``, ``tls``, ``tls.certresolver``: nothing to do (nginx answers on 80
  with a redirect and on 443 with the sidecar's own certificates); a ``redirectscheme`` middleware
  to https is what the sidecar does anyway.

Routers sending to the same port and scheme as the first (by name) make one site. Everything
else (other middlewares, path or regexp rules, TCP and UDP routers, other service settings,
``tls.domains``) is named in one warning per container; a container with no translatable router
gets one error.
"""

from __future__ import annotations

import re
from typing import Mapping

from sidecar.core.domains import DomainError, parse_domain_list
from sidecar.core.model import ContainerInfo, Problem
from sidecar.sources.translation import Translation

SOURCE = "Traefik labels"
ROUTERS, SERVICES, MIDDLEWARES = "traefik.http.routers.", "traefik.http.services.", "traefik.http.middlewares."
ROUTER_OK = frozenset({"rule", "service", "entrypoints", "priority", "tls", "tls.certresolver", "middlewares",
                       "rulesyntax"})
SERVICE_KEYS = {"loadbalancer.server.port": "port", "loadbalancer.server.scheme": "scheme"}
_TOKEN = re.compile(r"\s*(?:(\|\||&&|!|\(|\)|,)|([A-Za-z][A-Za-z0-9]*)|(`[^`]*`|\"(?:[^\"\\]|\\.)*\"))")
_ONLY = "only Host(...) matchers joined by || are translated"


def rule_hosts(rule: str) -> list[str]:
    """The host names of ``Host(`a`) || Host(`b`, `c`)``; ValueError saying what else the rule uses."""
    tokens: list[tuple[str, str]] = []
    pos, rule = 0, rule.strip()
    while pos < len(rule):
        match = _TOKEN.match(rule, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read the rule at {rule[pos:pos + 20]!r}")
        op, word, text = match.groups()
        tokens.append(("op", op) if op else ("word", word) if word else ("str", text[1:-1]))
        pos = match.end()
    hosts: list[str] = []
    at = 0

    def take(kind: str, value: str | None = None) -> str:
        nonlocal at
        if at >= len(tokens) or tokens[at][0] != kind or value not in (None, tokens[at][1]):
            found = tokens[at][1] if at < len(tokens) else "the end"
            if found in ("&&", "!"):
                raise ValueError(f"{found} is not translated ({_ONLY})")
            raise ValueError(f"expected {value or kind} but found {found!r}")
        at += 1
        return tokens[at - 1][1]

    def term() -> None:
        if at < len(tokens) and tokens[at] == ("op", "("):
            take("op", "(")
            expression()
            take("op", ")")
            return
        word = take("word")
        if word != "Host":
            raise ValueError(f"{word} is not translated ({_ONLY})")
        take("op", "(")
        hosts.append(take("str"))
        while at < len(tokens) and tokens[at] == ("op", ","):
            take("op", ",")
            hosts.append(take("str"))
        take("op", ")")

    def expression() -> None:
        term()
        while at < len(tokens) and tokens[at] == ("op", "||"):
            take("op", "||")
            term()

    expression()
    if at != len(tokens):
        take("op", "||")  # (raises: says what follows instead)
    return hosts


def _groups(labels: Mapping[str, str], prefix: str) -> dict[str, dict[str, str]]:
    """``<prefix><name>.<key>=v`` -> name -> key (lower case) -> v."""
    found: dict[str, dict[str, str]] = {}
    for key, value in labels.items():
        if key.startswith(prefix) and "." in key[len(prefix):]:
            name, _, rest = key[len(prefix):].partition(".")
            found.setdefault(name, {})[rest.lower()] = value.strip()
    return found


def translate(container: ContainerInfo) -> Translation | None:
    """The labels the container's Traefik labels stand for; None when it has none (or is disabled)."""
    labels = {k: v for k, v in container.labels.items() if k.startswith("traefik.")}
    if not labels or labels.get("traefik.enable", "").strip().lower() == "false":
        return None
    routers, services = _groups(labels, ROUTERS), _groups(labels, SERVICES)
    middlewares = _groups(labels, MIDDLEWARES)
    untranslated: list[str] = []
    if any(k.startswith(("traefik.tcp.", "traefik.udp.")) for k in labels):
        untranslated.append("TCP and UDP routers (nginx serves HTTP here)")
    known = (ROUTERS, SERVICES, MIDDLEWARES, "traefik.tcp.", "traefik.udp.")
    untranslated += [f"label {k[:100]}" for k in sorted(labels)
                     if not k.startswith(known) and k not in ("traefik.enable", "traefik.docker.network")]
    for name, keys in sorted(services.items()):
        untranslated += [f"service {name} {k}" for k in sorted(keys) if k not in SERVICE_KEYS]

    chosen: list[tuple[str, list[str], str, dict[str, str]]] = []  # router, hosts, service, its settings
    for router, keys in sorted(routers.items()):
        untranslated += [f"router {router} {k}" for k in sorted(keys) if k not in ROUTER_OK]
        if "rule" not in keys:
            continue
        source = f"container {container.name} label {ROUTERS}{router}.rule"
        try:
            hosts = rule_hosts(keys["rule"])
            parse_domain_list(",".join(hosts), wildcard=True)
        except DomainError as exc:
            return Translation(SOURCE, errors=(Problem(source, str(exc)),))
        except ValueError as exc:
            untranslated.append(f"router {router} ({exc})")
            continue
        service = keys.get("service") or (next(iter(services)) if len(services) == 1 else "")
        if service and service not in services:
            untranslated.append(f"router {router} (service {service[:60]} is not defined on this container)")
            continue
        if not service and len(services) > 1:
            untranslated.append(f"router {router} (no service named, and the container defines several)")
            continue
        for middleware in (m.strip() for m in keys.get("middlewares", "").split(",") if m.strip()):
            settings = middlewares.get(middleware.removesuffix("@docker"), {})
            kinds = sorted({k.partition(".")[0] for k in settings}) or ["defined elsewhere"]
            if kinds != ["redirectscheme"] or settings.get("redirectscheme.scheme", "").lower() != "https":
                untranslated.append(f"middleware {middleware[:60]} ({', '.join(kinds)}) of router {router}")
        chosen.append((router, hosts, service, {SERVICE_KEYS[k]: v for k, v in services.get(service, {}).items()
                                                if k in SERVICE_KEYS}))
    if not chosen:
        why = "; ".join(untranslated) or "no traefik.http.routers.<name>.rule label"
        return Translation(SOURCE, errors=(Problem(f"container {container.name}",
                                                   f"no Traefik router translated: {why}"[:900]),))
    first, hosts, service, upstream = chosen[0]
    result = {"domains": ",".join(hosts)}
    origins = {"domains": f"label {ROUTERS}{first}.rule"}
    for router, more, other, settings in chosen[1:]:
        if settings != upstream:
            untranslated.append(f"router {router} (another port or scheme than router {first}; one per container)")
        else:
            result["domains"] += "," + ",".join(more)
    for key, value in upstream.items():
        result[key], origins[key] = value, f"label {SERVICES}{service}.loadbalancer.server.{key}"
    if labels.get("traefik.docker.network", "").strip():
        result["network"], origins["network"] = labels["traefik.docker.network"].strip(), "label traefik.docker.network"
    return Translation(SOURCE, result, origins, untranslated=tuple(untranslated))
