"""Autoscaling on this machine (tests/support/autoscaling.py): Ray's v2 autoscaler with the fake
multi-node provider, its min/max/upscaling taken from our RayCluster manifests. A train job on
a cluster with no worker node gets the nodes it asks for, and they go after the idle timeout.

The idle timeout is the manifests' 120 s shortened to IDLE_TIMEOUT_S for CI time; the table the
test prints shows both."""

from __future__ import annotations

import json
import statistics
import subprocess
import time

import pytest

from tests.support.autoscaling import (
    NODE_TYPE,
    autoscaling_cluster,
    instance_timeline,
    side_by_side,
)
from tests.support.procs import BIN

pytestmark = pytest.mark.slow

IDLE_TIMEOUT_S = 10.0  # the manifests: idleTimeoutSeconds 120


def test_a_train_job_scales_the_cluster_up_from_zero_and_back_down(tmp_path):
    with autoscaling_cluster(tmp_path / "cluster", idle_timeout_s=IDLE_TIMEOUT_S) as cluster:
        node_type = cluster.config["available_node_types"][NODE_TYPE]
        rows = side_by_side(cluster.config, cluster.head_env)
        width = max(len(r[1]) for r in rows)
        print(f"\n{'setting':<20} {'our RayCluster manifests':<{width}} local autoscaler")
        for setting, manifest, local in rows:
            print(f"{setting:<20} {manifest:<{width}} {local}")
        assert cluster.worker_nodes() == []  # min_workers 0: nothing up before the job

        cmd = [str(BIN / "ray-app"), "train", "--ray-address", cluster.address,
               "--workers", "2", "--epochs", "1", "--subsample", "3000", "--json",
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--storage-path", str(tmp_path / "rr")]  # fmt: skip
        log = tmp_path / "train.log"
        started = time.time()  # wall clock: the autoscaler's log has the same
        proc = subprocess.Popen(cmd, env=cluster.env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=log.open("w"), text=True)  # fmt: skip
        cpus: dict[str, float] = {}  # every worker node the State API showed: its CPUs
        try:
            while proc.poll() is None:
                assert time.time() - started < 400, log.read_text()[-3000:]
                alive = cluster.worker_nodes()
                cpus.update({n["node_id"]: n["resources_total"].get("CPU", 0) for n in alive})
                time.sleep(2)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        ended = time.time()
        assert proc.returncode == 0, log.read_text()[-3000:]
        result = json.loads(out.strip().splitlines()[-1])

        # Back down after the idle timeout: the State API shows no worker node alive, no fake
        # node's raylet runs, and the autoscaler counts each instance it launched terminated.
        def scaled_down() -> bool:
            states = instance_timeline(cluster.autoscaler_log()).values()
            return not (cluster.worker_nodes() or cluster.node_raylets()
                        or any("TERMINATED" not in s for s in states))  # fmt: skip

        while not scaled_down():
            assert time.time() - ended < IDLE_TIMEOUT_S + 90, cluster.status()
            time.sleep(0.5)
        autoscaler_log = cluster.autoscaler_log()

    timeline = instance_timeline(autoscaler_log)
    instances = list(timeline.values())
    running = sorted(n["RAY_RUNNING"] for n in instances)
    launch = [n["RAY_RUNNING"] - n["QUEUED"] for n in instances]
    down = [n["TERMINATED"] - n["IDLE"] for n in instances if "IDLE" in n]
    gone = max(n["TERMINATED"] for n in instances) - ended
    peak = max(sum(n["RAY_RUNNING"] <= t < n["RAY_STOP_REQUESTED"] for n in instances)
               for t in running)  # fmt: skip
    print(f"job {ended - started:.1f} s. Up: worker nodes Ray-running {running[0] - started:.1f} "
          f"s (1st) and {running[1] - started:.1f} s (2nd) after the job started; a launch "
          f"(queued -> Ray running) {statistics.median(launch):.1f} s median, {max(launch):.1f} "
          f"s max; peak {peak} nodes, {len(timeline)} launched. Down: a node terminated "
          f"{statistics.median(down):.1f} s median, {max(down):.1f} s max after it fell idle "
          f"(idle timeout {IDLE_TIMEOUT_S:g} s); the last {abs(gone):.1f} s "
          f"{'after' if gone >= 0 else 'before'} the job's process ended")  # fmt: skip

    # The two Train workers ran on two worker nodes the autoscaler started, 1 CPU each.
    assert len(set(result["worker_nodes"])) == len(result["worker_nodes"]) == 2
    assert set(result["worker_nodes"]) <= set(cpus)
    assert cluster.head_node_id not in cpus
    assert set(cpus.values()) == {node_type["resources"]["CPU"]}
    # Scaled up to the 2 nodes Train needs, never past max_workers at once; every node it
    # launched was removed as idle (drained after the timeout: no failure, no crash).
    assert 2 <= peak <= node_type["max_workers"]
    drained = [line for line in autoscaler_log.splitlines() if "draining ray: idle for" in line]
    assert len(drained) == len(down) == len(timeline), autoscaler_log[-5000:]
    assert all(f"timeout={IDLE_TIMEOUT_S}" in line for line in drained)
    assert min(down) >= IDLE_TIMEOUT_S
    assert "ALLOCATION_FAILED" not in autoscaler_log
