"""A+ TLS out of the box (issue 4), end to end on the local demo with real nginx and Pebble.

- testssl.sh 3.2 (Debian's package, in a container on the demo network, trusting Pebble's
  root) rates a generated site A+ and reports its HSTS header;
- sslyze says the default site is compliant with Mozilla's "intermediate" configuration, and a
  second demo stack with ``TLS_PROFILE=modern`` with "modern" (all but the certificate signature
  criterion, which Pebble's RSA-keyed intermediate CA cannot meet);
- a site labelled ``acme.tls=modern`` among intermediate ones serves TLS 1.3 and refuses
  requests over TLS 1.2 (nginx negotiates with the shared listener's settings);
- ``nginx -t`` prints no warning for the generated config;
- per-site options given as labels (redirect, headers, HSTS flags, body size) and a snippet
  dropped into the snippets directory take effect; a broken snippet holds back only its site.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.core.events import Kind

from .stack import Stack, new_stack, running, wait_for

TESTSSL_IMAGE = os.environ.get("E2E_TESTSSL_IMAGE", "local/testssl:test")
# The checks testssl.sh 3.2 needs before it rates at all (its set_rating_state), SWEET32 (the one
# other check that can cap a grade) and the server's cipher preferences (-P: without it the cipher
# strength score comes out wrong). Left out, as they change neither grade nor score: client
# simulation, BREACH, LUCKY13, FREAK and Winshock. Measured here: the same A+ and score as a
# full default run, in half the time (about 70 s instead of 150 s on two busy cores).
TESTSSL_CHECKS = ["-p", "-s", "-f", "-S", "-P", "-h", "-H", "-I", "-T", "--BB", "-R", "-C", "-W", "-O", "-Z",
                  "-D", "-A", "-4", "-J"]
SNIPPETS = "/etc/nginx/sidecar-snippets"

MODERN = "modern.demo.test"
OPTS = "opts.demo.test"
BROKEN = "broken.demo.test"


@dataclass
class Tls:
    stack: Stack
    work: Path
    root_file: Path
    nginx_ip: str


def _nginx_ip(stack: Stack) -> str:
    c = stack.container("nginx")
    c.reload()
    ip = c.attrs["NetworkSettings"]["Networks"][stack.network]["IPAddress"]
    assert ip, "nginx has no address on the demo network"
    return str(ip)


def _write_snippet(stack: Stack, site: str, text: str) -> None:
    code, out = stack.exec("nginx", "sh", "-c", f"mkdir -p {SNIPPETS}/{site} && cat > {SNIPPETS}/{site}/e2e.conf "
                                                f"<<'EOF'\n{text}\nEOF")
    assert code == 0, out


@pytest.fixture(scope="module")
def tls(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    """Two more sites: one on the modern profile, one with options and a snippet."""
    assert stack.client.images.list(name=TESTSSL_IMAGE), f"image {TESTSSL_IMAGE} missing: run bash tests/build-images.sh"
    work = tmp_path_factory.mktemp("tls")
    root_file = work / "pebble-root.pem"
    root_file.write_text(stack.root_pem)
    # Snippets first, so the sites' first nginx -t already includes them.
    _write_snippet(stack, OPTS, 'add_header X-Snippet "from-snippet" always;')
    stack.run_app("tls-modern", {"acme.domains": MODERN, "acme.port": "5678", "acme.tls": "modern"}, "hello modern")
    stack.run_app("tls-opts", {
        "acme.domains": f"{OPTS},www.{OPTS}",
        "acme.port": "5678",
        "acme.redirect": "www-to-apex",
        "acme.hsts": "31536000; includeSubDomains",
        "acme.max_body_size": "1k",
        "acme.header.X-Frame-Options": "DENY",
        "acme.header.Referrer-Policy": "no-referrer",
    }, "hello opts")
    try:
        for host in (MODERN, OPTS):
            wait_for(f"https://{host}", lambda h=host: stack.https(h).status == 200, timeout=90)
    except AssertionError:
        print("---- sidecar logs ----\n" + stack.logs()[-6000:])
        raise
    yield Tls(stack, work, root_file, _nginx_ip(stack))


@pytest.fixture(scope="module")
def modern_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second demo whose sidecar runs with TLS_PROFILE=modern."""
    s = new_stack(Path(tmp_path_factory.mktemp("e2e-modern")))
    s.extra_files.append(Path(__file__).with_name("compose.tls-modern.yml"))
    with running(s, ["a.demo.test"]):
        yield s


def _testssl(t: Tls, host: str) -> tuple[list[dict[str, Any]], str, float]:
    out = t.work / "testssl"
    out.mkdir(exist_ok=True)
    (out / "root.pem").write_text(t.stack.root_pem)
    report = out / f"{host}.json"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    c = t.stack.client.containers.run(
        TESTSSL_IMAGE,
        [*TESTSSL_CHECKS, "--quiet", "--color", "0", "--warnings", "off", "--sneaky",
         "--ip", t.nginx_ip, "--nodns", "none", "--connect-timeout", "10", "--openssl-timeout", "10",
         "--add-ca", "/out/root.pem", "--jsonfile", f"/out/{host}.json", f"https://{host}/"],
        network=t.stack.network,
        volumes={str(out): {"bind": "/out", "mode": "rw"}},
        labels={"e2e.project": t.stack.project},
        detach=True,
    )
    t.stack.started.append(c.id)
    status = c.wait(timeout=600)
    seconds = time.monotonic() - started
    text = c.logs().decode("utf-8", "replace")
    assert report.exists(), f"testssl.sh wrote no JSON (exit {status}):\n{text[-4000:]}"
    return json.loads(report.read_text()), text, seconds


def _finding(findings: list[dict[str, Any]], ident: str) -> str:
    found = [f["finding"] for f in findings if f.get("id") in (ident, ident.removesuffix("_time"))]
    assert found, f"testssl.sh reported no {ident!r} finding"
    return str(found[0])


def _sslyze(stack: Stack, root_file: Path, host: str, config: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sslyze", f"--mozilla_config={config}", "--certinfo_ca_file", str(root_file),
         f"{host}:{stack.https_port}{{127.0.0.1}}"],
        capture_output=True, text=True, timeout=180,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _verdict(output: str, host: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if f"{host}:" in ln and ("ompliant" in ln or "FAILED" in ln)]
    return lines[-1] if lines else "no verdict line"


def test_testssl_rates_a_generated_site_a_plus_with_hsts(tls: Tls) -> None:
    findings, text, seconds = _testssl(tls, "a.demo.test")
    grade = _finding(findings, "overall_grade")
    caps = [f"{f['id']}: {f['finding']}" for f in findings if str(f.get("id", "")).startswith(("grade_cap", "grade_warn"))]
    grade_line = next((ln.strip() for ln in text.splitlines() if "Overall Grade" in ln), f"Overall Grade {grade}")
    tls.stack.record("testssl_grade_line", re.sub(r"\s+", " ", grade_line))
    tls.stack.record("testssl_final_score", _finding(findings, "final_score"))
    tls.stack.record("testssl_seconds", round(seconds, 1))
    assert grade == "A+", f"testssl.sh grade {grade}; caps: {caps}\n{text[-3000:]}"
    hsts = _finding(findings, "HSTS_time")  # "HSTS" before testssl.sh 3.2
    assert "63072000" in hsts, hsts
    tls.stack.record("testssl_hsts", hsts)
    # What the grade is made of: only TLS 1.2 and 1.3, no cipher without forward secrecy.
    protocols = {f["id"]: f["finding"] for f in findings if f.get("id") in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")}
    assert protocols and all("not offered" in v for v in protocols.values()), protocols


def test_sslyze_intermediate_default_site_is_compliant(tls: Tls) -> None:
    code, out = _sslyze(tls.stack, tls.root_file, "a.demo.test", "intermediate")
    verdict = _verdict(out, "a.demo.test")
    tls.stack.record("sslyze_intermediate_a.demo.test", verdict)
    assert code == 0, out[-4000:]
    assert "compliant" in verdict.lower() and "not compliant" not in verdict.lower(), verdict


def _handshake(stack: Stack, host: str, version: ssl.TLSVersion) -> tuple[str, int]:
    """(negotiated protocol, HTTP status of GET /) with at most ``version``."""
    ctx = ssl.create_default_context(cadata=stack.root_pem)
    ctx.maximum_version = version
    conn = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=5, context=ctx)
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", stack.https_port), 5), server_hostname=host)
    conn.sock = sock
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return str(sock.version()), resp.status
    finally:
        conn.close()


def test_sslyze_modern_profile_is_compliant(modern_stack: Stack, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    root.write_text(modern_stack.root_pem)
    code, out = _sslyze(modern_stack, root, "a.demo.test", "modern")
    verdict = _verdict(out, "a.demo.test")
    failed = re.findall(r"^\s+\* (\w+): (.*)$", out, re.M)
    modern_stack.record("sslyze_modern_a.demo.test", verdict)
    modern_stack.record("sslyze_modern_failed_criteria", [f"{k}: {v}" for k, v in failed])
    # Mozilla "modern" also wants the certificate signed with ECDSA: Pebble's intermediate CA has
    # an RSA key (Let's Encrypt's ECDSA chain does not have this problem). Nothing else may fail.
    assert [k for k, _ in failed] in ([], ["certificate_signatures"]), out[-4000:]
    assert all("sha256WithRSAEncryption" in v for _, v in failed), out[-4000:]
    assert code in (0, 1) and "Checking results against Mozilla's \"modern\" configuration" in out, out[-4000:]
    with pytest.raises(ssl.SSLError):  # TLS 1.2 is refused in the handshake
        _handshake(modern_stack, "a.demo.test", ssl.TLSVersion.TLSv1_2)
    assert _handshake(modern_stack, "a.demo.test", ssl.TLSVersion.TLSv1_3) == ("TLSv1.3", 200)


def test_modern_site_among_intermediate_ones_serves_tls13_only(tls: Tls) -> None:
    assert _handshake(tls.stack, "a.demo.test", ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", 200)
    assert _handshake(tls.stack, MODERN, ssl.TLSVersion.TLSv1_3) == ("TLSv1.3", 200)
    # nginx negotiates with the shared listener's settings; the site itself refuses the request.
    assert _handshake(tls.stack, MODERN, ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", 421)


def test_nginx_t_prints_no_warning(tls: Tls) -> None:
    code, out = tls.stack.exec("nginx", "nginx", "-t")
    assert code == 0, out
    assert "test is successful" in out
    assert not re.search(r"\[(warn|error|crit|alert|emerg)\]", out), out


def test_generated_file_says_where_each_value_came_from(tls: Tls) -> None:
    code, text = tls.stack.exec("nginx", "cat", f"/etc/nginx/conf.d/sidecar-site-{MODERN}.conf")
    assert code == 0, text
    assert re.search(r"^#\s+tls\s+modern \(TLS 1\.3 only per request.*<- label acme\.tls$", text, re.M), text
    assert re.search(r"^#\s+hsts\s+max-age=63072000\s+<- default$", text, re.M), text
    assert re.search(rf"^#\s+snippets\s+{SNIPPETS}/{MODERN}/\*\.conf\s+<- SNIPPETS_DIR$", text, re.M), text
    # Detected, not assumed: Debian trixie's nginx 1.26 with OpenSSL 3.5.
    assert re.search(r"^#\s+nginx\s+nginx 1\.\d+\.\d+ with OpenSSL 3\.\d+.*<- detected \(nginx -V\)$", text, re.M)
    assert "http2 on;" in text and "listen 443 ssl;" in text
    assert "ssl_protocols TLSv1.3;" in text and "ssl_ciphers" not in text
    assert "X25519MLKEM768" in text
    assert "ssl_session_tickets" not in text  # nginx >= 1.23.2 rotates ticket keys itself

    code, text = tls.stack.exec("nginx", "cat", "/etc/nginx/conf.d/sidecar-site-a.demo.test.conf")
    assert code == 0, text
    assert re.search(r"^#\s+tls\s+intermediate\s+<- default \(TLS_PROFILE\)$", text, re.M), text
    # The catch-all default server decides every handshake: the listener's (intermediate) settings.
    code, text = tls.stack.exec("nginx", "cat", "/etc/nginx/conf.d/sidecar-00-global.conf")
    assert code == 0, text
    catch_all = text.split("ssl_reject_handshake on;")[1]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in catch_all and "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:" in catch_all


def _post(stack: Stack, host: str, body: bytes) -> int:
    ctx = ssl.create_default_context(cadata=stack.root_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=5, context=ctx)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", stack.https_port), 5), server_hostname=host)
    try:
        conn.request("POST", "/", body=body, headers={"Host": host, "Content-Type": "text/plain"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_label_options_and_snippets_take_effect(tls: Tls) -> None:
    s = tls.stack
    r = s.https(OPTS)
    assert r.status == 200 and r.body.strip() == "hello opts"
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-snippet"] == "from-snippet"

    www = s.https(f"www.{OPTS}", "/path?q=1")
    assert www.status == 308
    assert www.headers["location"] == f"https://{OPTS}/path?q=1"
    assert www.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"

    # (No small POST through to the app: the http-echo stand-in never reads request bodies, which
    # would leave the bytes on nginx's keep-alive upstream connection for the next request.)
    assert _post(s, OPTS, b"x" * 4096) == 413
    assert s.https(OPTS).status == 200


def test_a_broken_snippet_holds_back_only_its_own_site(tls: Tls) -> None:
    s = tls.stack
    _write_snippet(s, BROKEN, "this_is_not_an_nginx_directive on;")
    since = s.cursor()
    app = s.run_app("tls-broken", {"acme.domains": BROKEN, "acme.port": "5678"}, "hello broken")
    try:
        rejected = s.wait_event(Kind.NGINX_REJECTED, BROKEN, since, timeout=90)
        assert rejected.details["file"] == f"sidecar-site-{BROKEN}.conf", rejected
        # the error names the snippet's file (and line), as the README says
        assert f"{SNIPPETS}/{BROKEN}/e2e.conf" in rejected.details["error"], rejected
        wait_for("the held-back site in /status, not live", lambda: (
            row := s.status()["rows"].get(BROKEN)) and row["state"] == "ok" and not row["live"], timeout=10)
        with pytest.raises(ssl.SSLError):  # no vhost for it: the catch-all server refuses the name
            s.https(BROKEN)
        for host in ("a.demo.test", MODERN, OPTS):
            assert s.https(host).status == 200
    finally:
        app.remove(force=True)
        s.exec("nginx", "rm", "-rf", f"{SNIPPETS}/{BROKEN}")
