"""A real multi-node Ray cluster on this machine: a head and extra nodes, each its own
`ray start --block` process group with its own ports, resources and temp dir.

Each node gets its own ``--temp-dir``: on one machine, nodes sharing /tmp/ray would also share
the runtime-env folders where Ray unpacks a job's working dir, which a real cluster's nodes
never do. Nodes are stopped by their process group id, never by `ray stop` (which would stop
every Ray on the machine). A node can be started inside its own mount namespace with some
folders hidden (an empty tmpfs over them): a node that lacks the data another node has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
TOKEN_LINE = "ray get-auth-token --generate > /dev/null"  # as the README writes it


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: the sockets stay open until all are drawn (drawn one by
    one, the kernel may hand the same port out twice, and Ray refuses a node whose
    components share one)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_COMPONENT_PORTS = ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                    "--metrics-export-port", "--dashboard-agent-listen-port",
                    "--dashboard-agent-grpc-port")


def _port_args(ports: list[int] | None = None) -> list[str]:
    """A node's component ports, all distinct."""
    ports = ports or free_ports(len(_COMPONENT_PORTS))
    return [f"{name}={port}" for name, port in zip(_COMPONENT_PORTS, ports)]


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen
    temp_dir: Path
    log_path: Path
    stopped: bool = False  # on purpose: its exit is no failure to start

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 8) -> None:
        self.stopped = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything of the group still alive

    def kill(self) -> None:
        """A lost node: SIGKILL to its whole process group (raylet, workers, agents)."""
        self.stop(signal.SIGKILL)


@dataclass
class RayCluster:
    """Head + nodes. ``address`` is the GCS address (for RAY_ADDRESS / `ray start
    --address`), ``dashboard`` the Jobs API URL."""

    logs: Path
    head_cpus: int = 2
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[RayNode] = field(default_factory=list)
    address: str = ""
    dashboard: str = ""
    token_path: Path | None = None

    def make_token(self, home: Path) -> None:
        """The README's token line, run with ``home`` as HOME: the cluster's own token file,
        never the user's ~/.ray/auth_token (`ray start --head` does not create one)."""
        subprocess.run(TOKEN_LINE, shell=True, check=True, timeout=120,
                       env={**os.environ, **self.env, "HOME": str(home)})
        self.token_path = home / ".ray" / "auth_token"
        assert self.token_path.stat().st_size > 0

    def token_env(self) -> dict[str, str]:
        return {"RAY_AUTH_TOKEN_PATH": str(self.token_path)} if self.token_path else {}

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, **self.token_env()}
        env.pop("RAY_ADDRESS", None)
        # every node of a token-protected cluster sends the token (on by default in 2.60)
        env.setdefault("RAY_AUTH_MODE", "token")
        return env

    def _spawn(self, name: str, args: list[str], hide: list[Path] = ()) -> RayNode:
        temp = Path(tempfile.mkdtemp(prefix=f"bkdray_{name}_", dir="/tmp"))
        cmd = [RAY, "start", "--block", f"--temp-dir={temp}", *args]
        if hide:
            mounts = " && ".join(f"mount -t tmpfs -o size=1m bkd-hidden {shlex_quote(p)}"
                                 for p in hide)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"{mounts} && exec {' '.join(shlex_quote(c) for c in cmd)}"]
        log_path = self.logs / f"ray-{name}.log"
        log = open(log_path, "w")
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                   start_new_session=True)
        log.close()
        node = RayNode(name, process, temp, log_path)
        self.nodes.append(node)
        return node

    def start_head(self, resources: str | None = None) -> RayNode:
        port, dash, client, *components = free_ports(3 + len(_COMPONENT_PORTS))
        args = ["--head", f"--port={port}", f"--num-cpus={self.head_cpus}",
                "--node-ip-address=127.0.0.1", "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}", "--object-store-memory=100000000",
                *_port_args(components)]
        if resources:
            args.append(f"--resources={resources}")
        head = self._spawn("head", args)
        self.address = f"127.0.0.1:{port}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        return head

    def add_node(self, name: str, cpus: int = 1, hide: list[Path] = ()) -> RayNode:
        args = [f"--address={self.address}", f"--num-cpus={cpus}",
                "--node-ip-address=127.0.0.1", "--object-store-memory=80000000",
                *_port_args()]
        return self._spawn(name, args, hide=hide)

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` nodes are alive (asked through `ray list nodes`)."""
        deadline = time.time() + timeout
        while True:
            alive = self.alive_nodes()
            if alive >= count:
                return
            dead = [n.name for n in self.nodes
                    if not n.stopped and n.process.poll() is not None]
            if dead or time.time() > deadline:
                tails = "\n".join(f"--- {n.name}\n{n.log_path.read_text()[-2000:]}"
                                  for n in self.nodes)
                raise RuntimeError(f"{alive}/{count} Ray nodes alive (exited: {dead})\n{tails}")
            time.sleep(1)

    def alive_nodes(self) -> int:
        out = subprocess.run([RAY, "list", "nodes", "--address", self.dashboard,
                              "--filter", "state=ALIVE", "--format", "json"],
                             capture_output=True, text=True, env=self._env(), timeout=60)
        if out.returncode != 0:
            return 0
        import json
        try:
            return len(json.loads(out.stdout))
        except ValueError:
            return 0

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)


def shlex_quote(value) -> str:
    import shlex
    return shlex.quote(str(value))
