"""A real multi-node Ray on this machine (tests/support/cluster.py): a head with no CPUs, worker
nodes of 1 CPU with their own raylets and object stores. `ray-app` joins it with --ray-address
as it joins a RayCluster's head.

The cluster is shared by the module (starting one costs ~20 s); a test that adds a node kills
it again, and the node-loss test, which replaces a node, runs last."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.cluster import LocalCluster, local_cluster
from tests.support.faults import NODE_LOST
from tests.support.procs import BIN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with local_cluster(tmp_path_factory.mktemp("cluster"), workers=2) as running:
        yield running


def _train(cluster: LocalCluster, work: Path, *extra: str, env: dict | None = None,
           wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:  # fmt: skip
    cmd = [str(BIN / "ray-app"), "train", "--ray-address", cluster.address, "--workers", "2",
           "--subsample", "3000", "--json", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
           *extra]  # fmt: skip
    env = {**cluster.env, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.PIPE,
                                stderr=(work / "train.log").open("w"), text=True)  # fmt: skip
    return subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clean_run(cluster, tmp_path_factory) -> dict:
    """`ray-app train --workers 2` across the two worker nodes, nothing lost: 4 epochs."""
    work = tmp_path_factory.mktemp("clean")
    proc = _train(cluster, work, "--epochs", "4", "--storage-path", str(work / "rr"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"result": json.loads(proc.stdout.strip().splitlines()[-1]), "work": work}


def test_training_places_its_two_workers_on_two_nodes(cluster, clean_run):
    result = clean_run["result"]
    workers = {n.node_id for n in cluster.nodes}
    # The head has no CPUs: rank 0 and rank 1 each on a worker node, not the same one.
    assert len(result["worker_nodes"]) == 2
    assert set(result["worker_nodes"]) == workers
    assert result["worker_group_restarts"] == 0 and result["resumed_from_epochs"] == []
    # Checkpoints in the shared storage path, written from the workers' nodes.
    checkpoint = Path(result["checkpoint"])
    assert checkpoint.is_relative_to(clean_run["work"] / "rr")
    assert (checkpoint / "model.pt").exists()
    assert result["epochs_run"] == 4 and result["model_version"] == 1


def test_a_storage_path_one_node_cannot_see_is_refused_up_front(cluster, tmp_path):
    """A node whose storage path is its own empty disk (a private tmpfs in its own mount
    namespace): exit 2 before any work, naming the node; no MLflow run was started."""
    storage = tmp_path / "rr"
    node = cluster.add_node("private", private=storage)
    try:
        start = time.monotonic()
        proc = _train(cluster, tmp_path, "--epochs", "1", "--storage-path", str(storage))
        took = time.monotonic() - start
    finally:
        cluster.kill_node(node)
        cluster.nodes.remove(node)
        cluster.wait_dead(node)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"--storage-path {storage} is not shared" in last and node.node_id[:12] in last, last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before the MLflow run
    assert took < 60, took


def _wait_for(paths: list[Path], proc: subprocess.Popen, log: Path, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"never saw {paths}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_a_node_lost_in_training_restarts_the_group_from_the_last_checkpoint(
    cluster, clean_run, tmp_path
):
    """Both ranks stop in epoch 3 once epoch 2 is committed; the node holding rank 1 is
    SIGKILLed (raylet, workers, agents) and a new node joins. Ray Train starts the worker group
    again, from epoch 2's checkpoint: epochs 1-2 are not rerun, and the run finishes as well as
    the clean one."""
    storage = tmp_path / "rr"
    proc = _train(cluster, tmp_path, "--epochs", "4", "--storage-path", str(storage),
                  env={"RAY_APP_EPOCH_HOOK": "tests.support.faults:park_in_epoch_3"},
                  wait=False)  # fmt: skip
    assert isinstance(proc, subprocess.Popen)
    log = tmp_path / "train.log"
    try:
        deadline = time.monotonic() + 300
        while not list(storage.glob("train-*/parked-1.txt")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        run_dir = next(storage.glob("train-*/parked-1.txt")).parent
        _wait_for([run_dir / "parked-0.txt"], proc, log, 60)
        lost = cluster.node_of(int((run_dir / "parked-1.txt").read_text()))
        killed_at, new = cluster.replace_node(lost, "w3", run_dir / NODE_LOST)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["worker_group_restarts"] == 1
    assert result["resumed_from_epochs"] == [2]
    # The new group runs on the surviving node and the new one.
    survivor = next(n for n in cluster.nodes if n.name != "w3")
    assert set(result["worker_nodes"]) == {survivor.node_id, new.node_id}
    # Epochs 1-2 ran once, before the loss; 3-4 after it, in the new group.
    latest = max((json.loads(p.read_text()) for p in run_dir.glob("checkpoint_*/train_meta.json")),
                 key=lambda m: m["epoch"])  # fmt: skip
    epochs = [int(r["epoch"]) for r in latest["history"]]
    assert epochs == [1, 2, 3, 4]
    ends = [r["epoch_end_unix"] for r in latest["history"]]
    assert ends[1] < killed_at < ends[2] < ends[3]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(result["mlflow_run_id"], "val_log_loss")]
    assert steps == [1, 2, 3, 4]
    # As good as the run that lost nothing (same data, seed and epochs).
    clean = clean_run["result"]
    assert result["test_log_loss"] <= clean["test_log_loss"] + 0.02
    assert result["test_accuracy"] >= clean["test_accuracy"] - 0.01


def test_a_node_lost_mid_search_restarts_only_its_trial_and_the_search_finishes(cluster, tmp_path):
    """Two trials at once, one per node, both stopped in epoch 3; the node of one of them is
    SIGKILLed and a new node joins. That trial starts again from its epoch-2 checkpoint (Tune's
    FailureConfig), the other goes on untouched, the third runs, and the best config is
    retrained (Ray Train, across the nodes) and registered."""
    faults = cluster.work / "faults"
    storage = tmp_path / "rr"
    cmd = [str(BIN / "ray-app"), "tune", "--ray-address", cluster.address, "--name", "s",
           "--num-samples", "3", "--max-concurrent", "2", "--max-epochs", "4",
           "--scheduler", "fifo", "--subsample", "3000", "--json",
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
           "--storage-path", str(storage)]  # fmt: skip
    log = tmp_path / "tune.log"
    env = {**cluster.env, "RAY_APP_EPOCH_HOOK": "tests.support.faults:park_trials_in_epoch_3"}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=log.open("w"), text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while len(list(faults.glob("parked-*.txt"))) < 2:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        parked = {int(p.read_text()) for p in faults.glob("parked-*.txt")}
        held = {pid: cluster.node_of(pid) for pid in parked}
        assert len({n.name for n in held.values()}) == 2  # one trial on each node
        lost_pid, lost = next(iter(held.items()))
        killed_at, _ = cluster.replace_node(lost, "w4", faults / NODE_LOST)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["trials"] == 3 and result["errored"] == 0
    assert result["epochs_consumed"] == result["full_budget_epochs"] == 12
    rows = {path.parent.name: [json.loads(line) for line in path.read_text().splitlines()]
            for path in (storage / "s").glob("*/result.json")}  # fmt: skip
    assert len(rows) == 3
    for trial, reports in rows.items():
        # Every epoch once per trial: the restarted one did not rerun epochs 1-2.
        assert [r["training_iteration"] for r in reports] == [1, 2, 3, 4], trial
    restarted = [t for t, reports in rows.items() if reports[0]["pid"] == lost_pid]
    assert len(restarted) == 1
    reports = rows[restarted[0]]
    assert reports[1]["epoch_end_unix"] < killed_at < reports[2]["epoch_end_unix"]
    assert reports[2]["pid"] != lost_pid  # epochs 3-4 ran in a new process, on another node
    # The best config, retrained with Ray Train over two nodes and registered.
    assert result["model_version"] == 1
    assert len(set(result["retrained"]["worker_nodes"])) == 2
