"""A real multi-node Ray cluster on one machine: a head with no CPUs for work (as our
RayCluster's head) and worker nodes, each a `ray start --block` of its own (its own raylet,
object store and workers), started one after the other and stopped by PID.

Ray tests node failures the same way on one host (ray.cluster_utils.Cluster, several raylets
joining one GCS). A node is "lost" by SIGKILL of its whole process tree: the raylet, its
workers, its agents; nothing of it says goodbye. Node-local disk is a private tmpfs mounted
in the node's own mount namespace (`unshare`, root only): the node's processes see an empty
folder where the driver sees its files.

For people: `python -m tests.support.cluster [--workers 2]` (or `make cluster`) starts one
and prints its addresses; Ctrl-C (or SIGTERM) stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.faults import FAULT_DIR_ENV
from tests.support.procs import BIN, REPO, descendants, ray_head, with_env

# The custom resource that names a worker node (ray_app_node_<name>: 1): tests find a node's
# id by it and pin work to it.
NODE_RESOURCE = "ray_app_node_{name}"


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    node_id: str
    log: Path
    temp_dir: Path
    private: Path | None = None  # a folder this node sees as its own empty disk

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class LocalCluster:
    """{url (dashboard), address (GCS), env (with the head's token)} and its worker nodes."""

    url: str
    address: str
    env: dict[str, str]
    work: Path
    nodes: list[Node] = field(default_factory=list)
    # Folders every worker node sees as its own empty disk: the driver's temp dir (TMPDIR in
    # `env`), as each pod of a RayCluster has its own /tmp. A path the driver hands to a
    # worker instead of the data behind it fails here as it would across machines.
    node_local: list[Path] = field(default_factory=list)

    def state(self, path: str) -> dict:
        """The State API (GET /api/v0/...), as `ray list` reads it."""
        request = urllib.request.Request(
            f"{self.url}/api/v0/{path}",
            headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read())["data"]["result"])

    def alive_nodes(self) -> list[dict]:
        """The nodes Ray counts as alive: [{node_id, resources_total, is_head_node, ...}]."""
        found = self.state("nodes?limit=100&detail=true")["result"]
        return [n for n in found if n["state"] == "ALIVE"]

    def add_node(self, name: str, num_cpus: int = 1, private: Path | None = None,
                 limit_s: float = 90) -> Node:  # fmt: skip
        """Start a worker node and wait until the head counts it alive. `private`: a folder
        this node sees as an empty tmpfs of its own (the other processes keep theirs), besides
        the cluster's `node_local` folders."""
        assert all(n.name != name for n in self.nodes), name
        temp_dir = Path(tempfile.mkdtemp(prefix=f"rn{name}", dir="/tmp"))
        log = self.work / f"node-{name}.log"
        resource = NODE_RESOURCE.format(name=name)
        cmd = [str(BIN / "ray"), "start", "--block", f"--address={self.address}",
               f"--num-cpus={num_cpus}", f"--resources={json.dumps({resource: 1})}",
               "--disable-usage-stats", f"--temp-dir={temp_dir}"]  # fmt: skip
        own = [*self.node_local, *([private] if private is not None else [])]
        if own:
            for folder in own:
                folder.mkdir(parents=True, exist_ok=True)
            mounts = " && ".join(f"mount -t tmpfs ray-app-node-{name} {f}" for f in own)
            script = f'{mounts} && exec "$@"'
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                   "node", *cmd]  # fmt: skip
        proc = subprocess.Popen(cmd, env=self.env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + limit_s
        while True:
            ids = [n["node_id"] for n in self.alive_nodes()
                   if n.get("resources_total", {}).get(resource)]  # fmt: skip
            if ids:
                node = Node(name, proc, ids[0], log, temp_dir, private)
                self.nodes.append(node)
                return node
            if proc.poll() is not None or time.monotonic() > deadline:
                _kill_tree(proc)
                pytest.fail(f"node {name} did not join in {limit_s:.0f} s:\n"
                            f"{log.read_text()[-3000:]}")  # fmt: skip
            time.sleep(0.5)

    def kill_node(self, node: Node) -> float:
        """SIGKILL every process of `node` (its raylet, workers, agents); returns when."""
        when = time.time()
        _kill_tree(node.proc)
        return when

    def node_of(self, pid: int) -> Node:
        """The worker node whose process tree holds `pid` (a Train worker, a Tune trial)."""
        return next(n for n in self.nodes if pid in descendants(n.proc.pid))

    def replace_node(self, lost: Node, name: str, marker: Path) -> tuple[float, Node]:
        """SIGKILL `lost`, write `marker` (what the parked hooks wait for), start node `name`;
        returns (when it was killed, the new node)."""
        killed_at = self.kill_node(lost)
        marker.write_text(f"{lost.name} ({lost.node_id}) killed\n")
        self.nodes.remove(lost)
        return killed_at, self.add_node(name)

    def wait_dead(self, node: Node, limit_s: float = 120) -> float:
        """Until the head no longer counts `node` alive (Ray's health checks); seconds."""
        start = time.monotonic()
        while any(n["node_id"] == node.node_id for n in self.alive_nodes()):
            assert time.monotonic() - start < limit_s, f"{node.name} still counted alive"
            time.sleep(0.5)
        return time.monotonic() - start

    def stop(self) -> None:
        for node in self.nodes:
            _kill_tree(node.proc, signal.SIGTERM)
            shutil.rmtree(node.temp_dir, ignore_errors=True)


def _kill_tree(proc: subprocess.Popen, first: signal.Signals = signal.SIGKILL) -> None:
    """`first` to the node's leader (SIGTERM: `ray start --block` stops its children), then
    SIGKILL for its group and every descendant (Ray workers set groups of their own)."""
    tree = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    if first != signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def local_cluster(work: Path, workers: int = 2, env: dict[str, str] | None = None,
                  ) -> Iterator[LocalCluster]:  # fmt: skip
    """A head (0 CPUs) and `workers` worker nodes of 1 CPU (named w1, w2, ...). Every node's
    processes can import this repository's `tests` (the fault-injection hooks), as every
    pod of a RayCluster has the image's code."""
    driver_tmp = work / "driver-tmp"
    driver_tmp.mkdir(exist_ok=True)
    (work / "faults").mkdir(exist_ok=True)
    env = {"PYTHONPATH": str(REPO), FAULT_DIR_ENV: str(work / "faults"), **(env or {})}
    with ray_head(work / "head.log", env, num_cpus=0) as (url, head_env):
        head_env = {**head_env, "TMPDIR": str(driver_tmp)}
        cluster = LocalCluster(url, head_env["TEST_RAY_GCS_ADDRESS"], head_env, work,
                               node_local=[driver_tmp])  # fmt: skip
        try:
            for i in range(1, workers + 1):
                cluster.add_node(f"w{i}")
            yield cluster
        finally:
            cluster.stop()
            # Anything a killed node left behind carries the head's token: by PID, only ours.
            for pid in with_env(f"RAY_AUTH_TOKEN={head_env['RAY_AUTH_TOKEN']}"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # `kill` stops it as Ctrl-C does (a backgrounded process ignores SIGINT).
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    work = Path(tempfile.mkdtemp(prefix="ray-app-cluster-"))
    with local_cluster(work, args.workers) as cluster:
        token = cluster.env["RAY_AUTH_TOKEN"]
        print(f"dashboard  {cluster.url}\naddress    {cluster.address}\n"
              f"token      export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={token}\n"
              f"nodes      {', '.join(f'{n.name}={n.node_id[:12]}' for n in cluster.nodes)}\n"
              f"logs       {work}\n"
              f"try        ray-app train --ray-address {cluster.address} --workers 2 "
              f"--storage-path {work}/ray_results\nCtrl-C stops it.", flush=True)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
