"""A real multi-node Docker Swarm on this machine, for the swarm end-to-end test.

Each node is a container (tests/images/swarm-node) running Debian's Docker engine with vfs storage
and its own cgroup mounts (see the README's "Docker Swarm" section for the limits). The nodes talk on
their own bridge network; the test reaches each node's engine and its nginx only through ports
published on 127.0.0.1. One flattened image (tests/images/swarm-payload: nginx, sidecar, certbot,
Pebble, the ACME proxy, the demo app) is loaded into every node.

``Swarm.close()`` removes every node container with its volumes (``docker rm -fv``) and the bridge
network, whatever happened before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
NODE_IMAGE = "local/swarm-node:test"
PAYLOAD_IMAGE = "local/swarm-payload:test"
BASE_IMAGE = os.environ.get("BASE_IMAGE", "local/debian:trixie-slim")
NODE_PORTS = (2375, 80, 443, 9090, 8080, 15000)  # engine API, nginx HTTP and HTTPS (host mode), issuer status,
# the ACME proxy's control API and Pebble's management API (on the worker)


def sh(*args: str, check: bool = True, input: bytes | None = None, timeout: float = 300,  # noqa: A002
       env: dict[str, str] | None = None) -> str:
    r = subprocess.run(list(args), capture_output=True, input=input, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
    return r.stdout.decode(errors="replace")


def build_images() -> None:
    """The node image and the payload image (flattened to one layer: vfs copies every layer in full)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", NODE_IMAGE,
                    str(ROOT / "tests/images/swarm-node")], check=True, capture_output=True, env=env)
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copytree(ROOT / "sidecar", Path(ctx) / "sidecar", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("nginx", "app", "acmeproxy"):
            shutil.copytree(ROOT / "tests/images" / name, Path(ctx) / name)
        shutil.copytree(ROOT / "examples/local-demo/pebble", Path(ctx) / "pebble")
        subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                        "-t", PAYLOAD_IMAGE + "-layers", "-f", str(ROOT / "tests/images/swarm-payload/Dockerfile"),
                        ctx], check=True, capture_output=True, env=env)
    layered = sh("docker", "image", "inspect", "-f", "{{.Id}}", PAYLOAD_IMAGE + "-layers").strip()
    flat = sh("docker", "image", "inspect", "-f", '{{index .Config.Labels "swarm-e2e.source"}}', PAYLOAD_IMAGE,
              check=False).strip()
    if flat == layered:
        return  # flattened from this very build already
    previous = sh("docker", "image", "inspect", "-f", "{{.Id}}", PAYLOAD_IMAGE, check=False).strip()
    cid = sh("docker", "create", PAYLOAD_IMAGE + "-layers", "true").strip()
    try:
        with subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE) as export:
            subprocess.run(["docker", "import", "--change", "WORKDIR /app",
                            "--change", "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
                            "--change", 'CMD ["nginx", "-g", "daemon off;"]',
                            "--change", f"LABEL swarm-e2e.source={layered}", "-", PAYLOAD_IMAGE],
                           stdin=export.stdout, check=True, capture_output=True)
    finally:
        sh("docker", "rm", "-f", cid, check=False)
    if previous:  # no dangling copy of 400 MB per run
        sh("docker", "image", "rm", previous, check=False)


@dataclass
class Node:
    name: str
    ports: dict[int, int]     # port inside -> port on 127.0.0.1
    address: str = ""         # on the nodes' bridge network
    node_id: str = ""

    @property
    def api(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[2375]}"

    def docker(self, *args: str, check: bool = True, input: bytes | None = None,  # noqa: A002
               timeout: float = 300) -> str:
        return sh("docker", "-H", self.api, *args, check=check, input=input, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self.docker(*args))


@dataclass
class Swarm:
    prefix: str
    nodes: list[Node] = field(default_factory=list)
    network: str = ""

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name or n.node_id == name)

    def start(self, names: list[str]) -> None:
        self.network = f"{self.prefix}-net"
        sh("docker", "network", "create", self.network)
        for name in names:
            node = Node(f"{self.prefix}-{name}", {p: free_port() for p in NODE_PORTS})
            self.nodes.append(node)
            publish = [a for inner, outer in node.ports.items() for a in ("-p", f"127.0.0.1:{outer}:{inner}")]
            sh("docker", "run", "-d", "--name", node.name, "--hostname", name, "--network", self.network,
               "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
               "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
               "--tmpfs", "/run", "--label", f"swarm-e2e={self.prefix}", "-e", f"CGROUP_PARENT=/dind-{node.name}",
               *publish, NODE_IMAGE)
        for node in self.nodes:
            wait_for(f"engine of {node.name}", lambda n=node: n.docker("info", "--format", "{{.ID}}", check=False),
                     timeout=90, interval=0.5)
            node.address = sh("docker", "inspect", "-f",
                              f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}',
                              node.name).strip()

    def load(self, image: str) -> None:
        """``docker save | docker load`` into every node, in parallel."""
        saved = Path(tempfile.mkdtemp()) / "image.tar"
        try:
            sh("docker", "save", "-o", str(saved), image)
            todo = list(self.nodes)
            for attempt in range(3):  # an engine under load sometimes drops the upload: try that node again
                procs = [subprocess.Popen(["docker", "-H", n.api, "load", "-i", str(saved)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in todo]
                failed = []
                for n, p in zip(todo, procs):
                    _, err = p.communicate(timeout=600)
                    if p.returncode != 0:
                        failed.append((n, err.decode(errors="replace").strip()))
                if not failed:
                    return
                if attempt == 2:
                    raise RuntimeError(f"loading {image} failed: {failed}")
                todo = [n for n, _ in failed]
                for n in todo:
                    wait_for(f"engine of {n.name}", lambda n=n: n.docker("info", "--format", "{{.ID}}", check=False),
                             timeout=90, interval=0.5)
        finally:
            shutil.rmtree(saved.parent, ignore_errors=True)

    def form(self, managers: int) -> None:
        """``swarm init`` on the first node, the next ``managers - 1`` join as managers, the rest as workers."""
        m = self.manager
        m.docker("swarm", "init", "--advertise-addr", m.address)
        tokens = {role: m.docker("swarm", "join-token", "-q", role).strip() for role in ("manager", "worker")}
        for i, node in enumerate(self.nodes[1:], start=1):
            role = "manager" if i < managers else "worker"
            node.docker("swarm", "join", "--advertise-addr", node.address, "--token", tokens[role],
                        f"{m.address}:2377")
        for node in self.nodes:
            node.node_id = node.docker("info", "--format", "{{.Swarm.NodeID}}").strip()

    def close(self) -> None:
        for node in self.nodes:
            sh("docker", "rm", "-fv", node.name, check=False, timeout=120)
        leftovers = sh("docker", "ps", "-aq", "--filter", f"label=swarm-e2e={self.prefix}", check=False).split()
        if leftovers:
            sh("docker", "rm", "-fv", *leftovers, check=False, timeout=120)
        if self.network:
            sh("docker", "network", "rm", self.network, check=False)


def started(prefix: str, names: list[str], managers: int) -> Swarm:
    swarm = Swarm(prefix)
    try:
        swarm.start(names)
        swarm.load(PAYLOAD_IMAGE)
        swarm.form(managers)
    except BaseException:
        swarm.close()
        raise
    return swarm


def wait(what: str, check: Any, timeout: float = 120.0) -> Any:
    return wait_for(what, check, timeout=timeout, interval=0.5)


