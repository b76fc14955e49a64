"""A real local Ray cluster on loopback: a head and worker nodes, each a ``ray start --block``
process in its own session, so a node is killed whole (``kill_node``) and everything is
stopped by process id at the end, never by name (``ray stop`` would stop every Ray node on
the machine, including ones this test did not start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Small nodes: one CPU each (so two runs land on two nodes), the least object store Ray
# accepts, no dashboard, no usage report.
NODE_FLAGS = ("--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
              "--object-store-memory", str(80 * 1000 * 1000), "--disable-usage-stats",
              "--dashboard-agent-listen-port", "0", "--block")


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path



@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    env: dict[str, str]
    nodes: dict[str, Node] = field(default_factory=dict)

    def start_node(self, name: str, *, head: bool = False) -> Node:
        log = self.temp_dir / f"{name}.log"
        if head:
            port = self.address.rsplit(":", 1)[1]
            cmd = [RAY, "start", "--head", "--port", port, "--include-dashboard", "false",
                   "--ray-client-server-port", str(free_port()),
                   "--temp-dir", str(self.temp_dir), *NODE_FLAGS]
        else:
            cmd = [RAY, "start", "--address", self.address, *NODE_FLAGS]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        node = self.nodes[name] = Node(name, proc, log)
        return node

    def wait_nodes(self, count: int, timeout_s: float = 120.0) -> None:
        """Until ``count`` nodes are alive in the cluster (``ray status`` lists them)."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.proc.poll() is not None:
                    raise RuntimeError(f"ray node {node.name} exited: "
                                       f"{node.log.read_text(errors='replace')[-2000:]}")
            r = subprocess.run([RAY, "status", "--address", self.address], env=self.env,
                               capture_output=True, text=True, timeout=60)
            text = r.stdout
            if r.returncode == 0 and text.count(" node_") >= count:
                return
            time.sleep(1.0)
        raise TimeoutError(f"{count} ray nodes not up after {timeout_s:g} s: {text[-2000:]}")

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's whole process group: raylet, GCS, object store and the workers
        the raylet forked all stay in the group of the ``ray start`` that began it."""
        node = self.nodes[name]
        with suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)

    def stop(self) -> None:
        for name in reversed(list(self.nodes)):
            self.kill_node(name)


@contextmanager
def ray_cluster(temp_dir: Path, workers: int = 1,
                extra_env: dict[str, str] | None = None) -> Iterator[RayCluster]:
    """A head and ``workers`` worker nodes on 127.0.0.1; stopped (by pid) however the block
    ends. ``temp_dir`` must be short: Ray's socket paths live under it."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
    cluster = RayCluster(f"127.0.0.1:{free_port()}", temp_dir, env)
    try:
        cluster.start_node("head", head=True)
        cluster.wait_nodes(1)
        for i in range(workers):
            cluster.start_node(f"worker{i + 1}")
        cluster.wait_nodes(1 + workers)
        yield cluster
    finally:
        cluster.stop()
