"""Sites + certificates -> the nginx files the sidecar owns. Pure (Jinja2 templates).

The sidecar owns only files named ``sidecar-*.conf`` in the shared conf.d volume:

- ``sidecar-00-global.conf``   shared TLS session cache, the port-80 listener that
  serves ACME challenges and redirects everything else to HTTPS (308), and a
  catch-all HTTPS server that refuses unknown names.
- ``sidecar-00-upstreams.conf`` the ``upstream`` blocks ("pools"): one per set of servers,
  shared by every site that proxies to the same servers over plain HTTP (an HTTPS
  upstream gets a pool per site: its kept-alive connections carry that site's SNI).
  nginx sets up each ``upstream`` block much as it does a server and resolves its host
  names at every load: one block per site tripled the load at ten thousand sites.
- ``sidecar-site-NAME.conf``   one per site, written only once the site's
  certificate exists, so nginx is never pointed at a missing file. Its header
  comment says where every setting came from (label, sites file entry, default).

Anything else in the directory (hand-written configs) is never touched.

TLS handshakes on port 443 follow the settings of the listener's default server
(the catch-all in the global file): nginx switches only the certificate when SNI
selects a site, not the protocols, ciphers or groups. So the catch-all carries the
loosest profile any site needs (``intermediate`` if one does, else ``modern``), and
a ``modern`` site on an ``intermediate`` listener refuses requests that did not come
over TLS 1.3 (421) while its own server block still states the modern settings.

What nginx supports is detected, not assumed (``traits_from`` reads ``nginx -V``):
``http2 on;`` from nginx 1.25.1 (older: ``listen ... http2``), session tickets are
turned off below 1.23.2 (older versions never rotate the ticket key), the
post-quantum group X25519MLKEM768 is offered from OpenSSL 3.5, and HTTP/3 only
where nginx was built ``--with-http_v3_module``.

HTTP/3 (``HTTP3``, label ``acme.http3``): a site with it on gets ``listen 443 quic``
and an ``Alt-Svc`` header naming ``HTTP3_PORT``; the catch-all server holds the one
``listen 443 quic reuseport`` (nginx allows ``reuseport`` once per address) and
refuses unknown names over QUIC as it does over TCP. A site with it off has no QUIC
listener, so its names are refused over QUIC and nothing advertises them.

``TEMPLATES_DIR`` may hold a ``site.conf.j2`` and/or ``global.conf.j2`` that replace
the shipped ones; the shipped ones stay reachable as ``shipped/site.conf.j2`` (to
``{% extends %}`` them and override a block).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import jinja2

from sidecar import __version__
from sidecar.core.errors import ConfigError
from sidecar.core.model import Certificate, Site, SourceKind, Upstream
from sidecar.core.names import site_filename
from sidecar.core.options import redirect_pairs

GLOBAL_FILE = "sidecar-00-global.conf"
POOLS_FILE = "sidecar-00-upstreams.conf"
SHARED_FILES = frozenset({GLOBAL_FILE, POOLS_FILE})  # owned files that are no one site's
POOL_PREFIX = "sidecar_pool_"
POOL_NAME = re.compile(rf"\b{POOL_PREFIX}[0-9a-f]{{12}}\b")
_POOL_BLOCK = re.compile(rf"^upstream ({POOL_PREFIX}[0-9a-f]{{12}}) {{\n.*?^}}\n", re.M | re.S)
POOL_KEEPALIVE = 16  # idle connections each nginx worker keeps open per pool
TEMPLATE_NAMES = ("site.conf.j2", "global.conf.j2")

MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


@dataclass(frozen=True)
class NginxTraits:
    """What the running nginx supports, probed once through ``docker exec`` (see ``traits_from``)."""

    ipv6: bool = False
    # OpenSSL 3.5+ offers the hybrid post-quantum group X25519MLKEM768.
    post_quantum: bool = False
    # nginx 1.25.1+ has the ``http2 on;`` directive; older ones take ``listen ... http2``.
    http2_directive: bool = True
    # nginx before 1.23.2 never rotates session ticket keys: turn tickets off there.
    session_tickets_off: bool = False
    # As detected, for the header comment ("" when unknown).
    version: str = ""
    openssl: str = ""
    # Built --with-http_v3_module: QUIC listeners and Alt-Svc are possible.
    http3: bool = False


@dataclass(frozen=True)
class Http3:
    """HTTP/3 settings: ``default`` for sites without ``acme.http3`` (``HTTP3``), and the UDP
    port clients reach, advertised in ``Alt-Svc`` (``HTTP3_PORT``)."""

    default: bool = False
    port: int = 443

    def wanted(self, site: Site) -> bool:
        return self.default if site.options.http3 is None else site.options.http3


_NGINX_VERSION = re.compile(r"nginx version: (?:nginx|freenginx|openresty)/(\d+)\.(\d+)\.(\d+)")


def traits_from(nginx_v_output: str, disable_ipv6_output: str) -> NginxTraits:
    """Traits from ``nginx -V`` output and ``/proc/sys/net/ipv6/conf/all/disable_ipv6``.

    Pass ``""`` for the second when it could not be read (no IPv6 then). An unknown
    nginx version gets the forms every version accepts (``listen ... http2``, no tickets).
    """
    found = _NGINX_VERSION.search(nginx_v_output)
    version = (int(found.group(1)), int(found.group(2)), int(found.group(3))) if found else None
    # The library nginx runs with decides which groups exist; "built with" when they are the same.
    ssl = re.search(r"running with OpenSSL (\d+)\.(\d+)(\.\d+)?", nginx_v_output) or re.search(
        r"built with OpenSSL (\d+)\.(\d+)(\.\d+)?", nginx_v_output
    )
    return NginxTraits(
        ipv6=disable_ipv6_output.strip() == "0",
        post_quantum=ssl is not None and (int(ssl.group(1)), int(ssl.group(2))) >= (3, 5),
        http2_directive=version is not None and version >= (1, 25, 1),
        session_tickets_off=version is None or version < (1, 23, 2),
        version=".".join(map(str, version)) if version else "",
        openssl=f"{ssl.group(1)}.{ssl.group(2)}{ssl.group(3) or ''}" if ssl else "",
        http3="--with-http_v3_module" in nginx_v_output,
    )


@dataclass(frozen=True)
class TlsProfile:
    name: str
    protocols: str
    ciphers: str
    curves: str


def tls_profile(traits: NginxTraits, profile: str = "intermediate") -> TlsProfile:
    """Mozilla guideline 6.0 "intermediate" (default) or "modern" (TLS 1.3 only)."""
    curves = ("X25519MLKEM768:" if traits.post_quantum else "") + "X25519:prime256v1:secp384r1"
    if profile == "modern":
        return TlsProfile(name="modern", protocols="TLSv1.3", ciphers="", curves=curves)
    return TlsProfile(
        name="intermediate", protocols="TLSv1.2 TLSv1.3", ciphers=MOZILLA_INTERMEDIATE_CIPHERS, curves=curves
    )


_SHIPPED = jinja2.PackageLoader("sidecar.core", "templates")


def _comment(value: object) -> str:
    """Text for a ``#`` comment: one line, printable ASCII only."""
    return re.sub(r"[^\x20-\x7e]", "?", str(value))


def _signature(templates_dir: str | None) -> tuple[tuple[str, int, int], ...]:
    """Which override templates exist, and their versions: a new or removed file gets a fresh loader."""
    if not templates_dir:
        return ()
    found = []
    for name in TEMPLATE_NAMES:
        try:
            st = (Path(templates_dir) / name).stat()
        except OSError:
            continue
        found.append((name, st.st_mtime_ns, st.st_size))
    return tuple(found)


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: str | None, signature: tuple[tuple[str, int, int], ...] = ()) -> jinja2.Environment:
    own: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(templates_dir)] if templates_dir else []
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(own + [_SHIPPED, jinja2.PrefixLoader({"shipped": _SHIPPED})]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # nginx config, not HTML; every value is validated before it gets here
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["comment"] = _comment
    return env


def _render(name: str, templates_dir: str | None, **context: Any) -> str:
    try:
        return _environment(templates_dir, _signature(templates_dir)).get_template(name).render(version=__version__, **context)
    except jinja2.TemplateError as exc:
        if not templates_dir:
            raise
        line = getattr(exc, "lineno", None)
        where = f"{getattr(exc, 'name', None) or name}" + (f" line {line}" if line else "")
        raise ConfigError(f"TEMPLATES_DIR={templates_dir}: {where}: {_comment(exc.message or exc)}") from None


def upstream_name(site_name: str) -> str:
    # Names are normalised host names ([a-z0-9.-]): mapping only "." keeps them distinct.
    return "sidecar_" + re.sub(r"[^a-z0-9-]", "_", site_name)


def _servers(site: Site) -> tuple[str, ...]:
    """The ``server`` addresses of ``site``'s pool, each once, sorted."""
    return tuple(sorted({u.address for u in site.upstreams}))


def pool_key(site: Site) -> tuple[object, ...]:
    """What decides a site's pool: its scheme and servers (in any order); an HTTPS upstream's
    pool is the site's own, so a kept-alive connection never carries another site's SNI."""
    return (site.upstream_scheme, _servers(site), site.name if site.upstream_scheme == "https" else "")


def pool_name(site: Site) -> str:
    """The shared ``upstream`` block ``site`` proxies to (a valid nginx identifier)."""
    return POOL_PREFIX + hashlib.sha256(repr(pool_key(site)).encode()).hexdigest()[:12]


def render_pools(sites: list[Site] | tuple[Site, ...]) -> str:
    """``POOLS_FILE``: one ``upstream`` block per pool ``sites`` use, sorted by name (stable text)."""
    pools: dict[str, Site] = {}
    for site in sites:
        pools.setdefault(pool_name(site), site)
    out = [f"# Managed by nginx-acme-sidecar {__version__}: rewritten on every change, do not edit.\n"
           "# The upstream blocks of the generated sites: one per set of servers, shared by the sites\n"
           "# that proxy to them (an HTTPS upstream: one per site).\n"]
    for name in sorted(pools):
        lines = "".join(f"    server {address};\n" for address in _servers(pools[name]))
        out.append(f"upstream {name} {{\n{lines}    keepalive {POOL_KEEPALIVE};\n}}\n")
    return "\n".join(out)


def pool_blocks(text: str) -> dict[str, tuple[int, int, str]]:
    """The blocks of a ``POOLS_FILE`` text: name -> (first line, last line, block text), lines from 1."""
    found: dict[str, tuple[int, int, str]] = {}
    for m in _POOL_BLOCK.finditer(text):
        first = text.count("\n", 0, m.start()) + 1
        found[m.group(1)] = (first, first + m.group(0).count("\n") - 1, m.group(0))
    return found


def server_name(domain: str) -> str:
    """nginx's ``server_name`` for one certificate name. A wildcard becomes a regular expression that
    matches one label, as the certificate does: nginx's own ``*.example.com`` would also take
    ``a.b.example.com``, which the certificate does not cover (that name goes to the default server and
    is refused). Exact names of other sites still win: nginx tries them before any expression."""
    if domain.startswith("*."):
        return "~^[^.]+" + ("." + domain[2:]).replace(".", "\\.") + "$"
    return domain


def snippets_glob(snippets_dir: str | None, site_name: str) -> str:
    """``<SNIPPETS_DIR>/<site>/*.conf`` ("" when snippets are off)."""
    return f"{snippets_dir.rstrip('/')}/{site_name}/*.conf" if snippets_dir else ""


def listener_profile(sites: tuple[Site, ...] | list[Site], default: str) -> str:
    """The profile the shared 443 listener must offer: the loosest one any of ``sites`` needs."""
    wanted = {s.options.tls or default for s in sites} or {default}
    return "intermediate" if "intermediate" in wanted else "modern"


def render_global(
    webroot: str, traits: NginxTraits, templates_dir: str | None = None, profile: str = "intermediate",
    user_defaults: frozenset[int] = frozenset(), http_names: tuple[str, ...] = (), quic: bool = False,
    challenge_proxy: str | None = None,
) -> str:
    """``profile``: the listener's (see ``listener_profile``); it decides every TLS handshake.

    ``user_defaults``: ports where a hand-written server already says ``default_server``
    (nginx refuses two); there the sidecar's servers answer by name instead. ``quic``: some
    site serves HTTP/3, so the catch-all opens the shared QUIC listener.
    ``challenge_proxy`` (Docker Swarm): host:port a challenge not in this node's webroot is forwarded to.
    """
    return _render("global.conf.j2", templates_dir, webroot=webroot, ipv6=traits.ipv6, traits=traits,
                   tls=tls_profile(traits, profile), default80=80 not in user_defaults,
                   default443=443 not in user_defaults, http_names=http_names, quic=quic and traits.http3,
                   challenge_proxy=challenge_proxy)


def _detected(traits: NginxTraits) -> str:
    return ", ".join([
        f"nginx {traits.version or 'of unknown version'}"
        + (f" with OpenSSL {traits.openssl}" if traits.openssl else ""),
        "http2 on;" if traits.http2_directive else "listen ... http2",
        "IPv6 listeners" if traits.ipv6 else "no IPv6",
        "X25519MLKEM768" if traits.post_quantum else "no post-quantum group",
        "session tickets off (no key rotation)" if traits.session_tickets_off else "session tickets rotated by nginx",
        "HTTP/3 module" if traits.http3 else "no HTTP/3 module",
    ])


def _provenance(
    site: Site, profile: str, listener: str, redirects: list[tuple[str, str]], snippets: str,
    templates_dir: str | None, traits: NginxTraits, http3: Http3,
) -> list[str]:
    """Header comment lines: ``setting  value  <- where it came from``."""
    o = site.options

    def src(key: str, default: str = "default") -> str:
        given = o.origin(key)
        return default if given == "default" else given

    tls = o.tls or profile
    if tls == "modern" and listener == "intermediate":
        tls += " (TLS 1.3 only per request: other sites keep TLS 1.2 on the shared listener)"
    elif tls == "intermediate" and listener == "modern":
        tls += " (the listener is modern for every site)"
    rows = [
        ("tls", tls, src("tls", "default (TLS_PROFILE)")),
        ("hsts", o.hsts.header if o.hsts else "off", src("hsts")),
        ("max_body_size", o.max_body_size or "nginx default (1m)", src("max_body_size")),
        ("redirect", ", ".join(f"{a} -> {b}" for a, b in redirects) if redirects else (o.redirect or "none"),
         src("redirect")),
        ("websocket", "on" if o.websocket else "off", src("websocket")),
        ("key_type", o.key_type or "the sidecar's ACME_KEY_TYPE", src("key_type")),
        ("profile", o.acme_profile or "the sidecar's ACME_PROFILE", src("profile")),
        ("challenge", o.challenge or "the sidecar's ACME_CHALLENGE", src("challenge")),
    ]
    if o.dns_provider:
        rows.append(("dns_provider", o.dns_provider, src("dns_provider")))
    h3 = http3.wanted(site)
    rows.append(("http3", (f"on, Alt-Svc port {http3.port}" if traits.http3 else "off (this nginx has no HTTP/3 module)")
                 if h3 else "off", src("http3", "default (HTTP3)")))
    rows += [(f"header {name}", value, src("header." + name)) for name, value in o.headers]
    rows += [
        ("snippets", snippets or "off", "SNIPPETS_DIR"),
        ("template", "site.conf.j2 from " + (templates_dir or "the sidecar"),
         "TEMPLATES_DIR" if templates_dir else "default"),
        ("nginx", _detected(traits), "detected (nginx -V)"),
    ]
    width = max(len(r[0]) for r in rows)
    return [_comment(f"{k:<{width}}  {v}  <- {w}") for k, v, w in rows]


def render_site(
    site: Site,
    cert: Certificate,
    traits: NginxTraits,
    profile: str = "intermediate",
    snippets_dir: str | None = None,
    templates_dir: str | None = None,
    listener: str | None = None,
    http3: Http3 = Http3(),
) -> str:
    """The HTTPS server for ``site``, answering only the names ``cert`` covers.

    ``profile`` is the default for sites without their own ``tls`` option; ``listener``
    the profile of the shared listener (default: ``profile``). With a
    ``redirect`` option, each redirected name gets a small server of its own that
    answers 308 (only while the certificate covers both names of the pair).
    """
    names = [d for d in site.domains if d in cert.names]
    redirects = [(a, b) for a, b in redirect_pairs(site.domains, site.options.redirect) if a in names and b in names]
    moved = {a for a, _ in redirects}
    snippets = snippets_glob(snippets_dir, site.name)
    tls = site.options.tls or profile
    listener = listener or profile
    return _render(
        "site.conf.j2",
        templates_dir,
        site=site,
        options=site.options,
        server_names=[server_name(n) for n in names if n not in moved],
        redirects=redirects,
        cert=cert,
        ipv6=traits.ipv6,
        traits=traits,
        tls=tls_profile(traits, tls),
        # nginx negotiates with the listener's settings: enforce TLS 1.3 per request instead.
        tls13_only=tls == "modern" and listener != "modern",
        hsts=site.options.hsts.header if site.options.hsts else "",
        snippets=snippets,
        provenance=_provenance(site, profile, listener, redirects, snippets, templates_dir, traits, http3),
        upstream_name=upstream_name(site.name),
        pool=pool_name(site),
        # The UDP port clients reach, for Alt-Svc; 0: no HTTP/3 for this site.
        http3_port=http3.port if traits.http3 and http3.wanted(site) else 0,
    )


# (site, certificate, traits, profile, snippets, templates dir, listener, HTTP/3, templates' signature) -> text
RenderCache = dict[tuple[object, ...], str]


def render_all(
    sites: tuple[Site, ...] | list[Site],
    certificates: Mapping[str, Certificate],
    webroot: str,
    traits: NginxTraits,
    profile: str = "intermediate",
    snippets_dir: str | None = None,
    templates_dir: str | None = None,
    user_defaults: frozenset[int] = frozenset(),
    http3: Http3 = Http3(),
    challenge_proxy: str | None = None,
    cache: RenderCache | None = None,
) -> dict[str, str]:
    """filename -> content for every file the sidecar wants in conf.d right now.

    ``cache`` (kept by the caller between calls): a site whose inputs did not change is not
    rendered again; at ten thousand sites rendering all of them took seconds of every pass.

    A site gets its HTTPS server block only once its lineage exists, and answers
    only the names the certificate covers (a name being added waits for the
    expanded certificate; the others keep serving meanwhile). A consumer's site
    (``SourceKind.CONSUMER``) gets none: its names are only answered on port 80, for challenges.
    """
    live = [(s, c) for s in sites if (c := certificates.get(s.name)) is not None and set(s.domains) & c.names
            and s.source_kind is not SourceKind.CONSUMER]  # (a consumer's names get challenges only)
    listener = listener_profile([s for s, _ in live], profile)
    names = tuple(dict.fromkeys(d for site in sites for d in site.domains))
    quic = any(http3.wanted(s) for s, _ in live)
    files = {GLOBAL_FILE: render_global(webroot, traits, templates_dir, listener, user_defaults, names, quic,
                                        challenge_proxy)}
    if live:
        files[POOLS_FILE] = render_pools([s for s, _ in live])
    templates = _signature(templates_dir)
    kept: RenderCache = {}
    for site, cert in live:
        key = (site, cert, traits, profile, snippets_dir, templates_dir, listener, http3, templates)
        try:
            text = cache.get(key) if cache is not None else None
            hashable = True
        except TypeError:  # (an unhashable value somewhere: render it every time)
            text, hashable = None, False
        if text is None:
            text = render_site(site, cert, traits, profile, snippets_dir, templates_dir, listener, http3)
        if hashable:
            kept[key] = text
        files[site_filename(site.name)] = text
    if cache is not None:  # (only what this call used: the cache never outgrows the sites)
        cache.clear()
        cache.update(kept)
    return files


def check_templates(templates_dir: str) -> None:
    """Raise ``ConfigError`` naming TEMPLATES_DIR unless its templates load and render a sample site."""
    path = Path(templates_dir)
    if not path.is_dir():
        raise ConfigError(f"TEMPLATES_DIR={templates_dir}: not a directory")
    if not any((path / name).is_file() for name in TEMPLATE_NAMES):
        raise ConfigError(f"TEMPLATES_DIR={templates_dir}: holds neither {' nor '.join(TEMPLATE_NAMES)}")
    render_sample(templates_dir)


def render_sample(templates_dir: str | None) -> dict[str, str]:
    """Render one sample site (which also compiles the templates ahead of the first real one)."""
    now = datetime(2000, 1, 1, tzinfo=timezone.utc)
    site = Site(("example.com",), (Upstream("http", "10.0.0.2", 80),), "sample", SourceKind.FILE)
    cert = Certificate(
        "example.com", frozenset({"example.com"}), now, now, "sample CA", "ecdsa", 1,
        fullchain_path="/etc/letsencrypt/live/example.com/fullchain.pem",
        privkey_path="/etc/letsencrypt/live/example.com/privkey.pem",
    )
    return render_all([site], {"example.com": cert}, "/var/www/acme", NginxTraits(), templates_dir=templates_dir)
