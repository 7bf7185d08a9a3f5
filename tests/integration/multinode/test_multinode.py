"""A real multi-node Ray on this machine (tests/support/cluster.py): a head with no CPUs, worker
nodes of 1 CPU with their own raylets and object stores. `ray-app` joins it with --ray-address
as it joins a RayCluster's head.

The cluster is shared by the module (starting one costs ~20 s); a test that adds a node kills
it again, the node-loss tests replace the node they kill, and the serving test, which swaps
the worker nodes for bigger ones, runs last."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ray_app.core.config import PredictionLogConfig, ServeConfig
from ray_app.serving.config import SERVE_ENV, render_config, serve_config
from tests.support.cluster import LocalCluster, local_cluster
from tests.support.faults import NODE_LOST
from tests.support.load import Load
from tests.support.procs import BIN, free_port, stop_group
from tests.support.samples import DATA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Every node has the RayService pods' Serve settings (HAProxy, direct ingress), as our
    # RayCluster's pods do; HAProxy's own listeners get free ports.
    env = {**SERVE_ENV, "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}  # fmt: skip
    with local_cluster(tmp_path_factory.mktemp("cluster"), workers=2, env=env) as running:
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


def test_a_storage_path_one_node_cannot_see_is_refused_up_front(cluster, clean_run, tmp_path):
    """A node whose storage path is its own empty disk (a private tmpfs in its own mount
    namespace): exit 2 before any work, naming the node; no MLflow run was started. The same
    for `ray-app predict`, whose input is read and output written on the nodes."""
    storage = tmp_path / "rr"
    node = cluster.add_node("private", private=storage)
    predict = [str(BIN / "ray-app"), "predict", "--ray-address", cluster.address,
               "--tracking-uri", f"sqlite:///{clean_run['work'] / 'mlflow.db'}"]  # fmt: skip
    try:
        start = time.monotonic()
        proc = _train(cluster, tmp_path, "--epochs", "1", "--storage-path", str(storage))
        took = time.monotonic() - start
        source = storage / "in.test"  # the driver sees it, the private node does not
        source.write_bytes((DATA / "adult.test").read_bytes())
        unread = subprocess.run([*predict, "--data", str(source), "--out", str(tmp_path / "o")],
                                env=cluster.env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        unwritten = subprocess.run(
            [*predict, "--data", str(DATA / "adult.test"), "--out", str(storage / "scored")],
            env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
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
    for refused, option, path in ((unread, "--data", source),
                                  (unwritten, "--out", storage)):  # fmt: skip
        assert refused.returncode == 2, refused.stderr[-3000:]
        said = " ".join(refused.stderr.split())
        assert f"{option} {path} is not shared" in said and node.node_id[:12] in said, said
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "o").exists() and not (storage / "scored").exists()


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


def _actors(cluster: LocalCluster, class_name: str) -> list[dict]:
    """Every actor of `class_name` the cluster knows of, dead ones too (State API)."""
    found = cluster.state(f"actors?limit=10000&detail=true&filter_keys=class_name"
                          f"&filter_predicates=%3D&filter_values={quote(class_name)}")  # fmt: skip
    return list(found["result"])


SCORER = "MapWorker(MapBatches(BatchScorer))"  # Ray Data's actor around ray_app's BatchScorer


def _scoring_tasks(cluster: LocalCluster, job: str) -> list[dict]:
    """The scoring actors' block tasks of `job` that have started (any state but pending)."""
    found = cluster.state(f"tasks?limit=10000&filter_keys=job_id&filter_predicates=%3D"
                          f"&filter_values={job}")["result"]  # fmt: skip
    return [t for t in found if "BatchScorer" in t["name"] and t["name"].endswith(".submit")
            and t["state"] in ("RUNNING", "FINISHED", "FAILED")]  # fmt: skip


def test_a_node_lost_mid_predict_loses_no_row_and_repeats_none(cluster, clean_run, tmp_path):
    """`ray-app predict` of 16 files (260k rows, one of them bad) with two scoring actors, one
    per node; once scoring has begun, the node of one actor is SIGKILLed and a new node
    joins. Ray re-runs what the node held (its reads, its scored blocks): every valid
    row comes out exactly once, the bad one is reported."""
    source = tmp_path / "in"
    source.mkdir()
    lines = (DATA / "adult.test").read_text().splitlines()
    rows = [n for n, line in enumerate(lines, 1) if line and not line.startswith("|")]
    bad_file, bad_line = source / "part-04.test", rows[100]
    for i in range(16):
        body = list(lines)
        if i == 4:  # an age that is not a number
            body[bad_line - 1] = "abc" + body[bad_line - 1][body[bad_line - 1].index(",") :]
        (source / f"part-{i:02}.test").write_text("\n".join(body) + "\n")
    expected = {(str(f), n) for f in source.iterdir() for n in rows} - {(str(bad_file), bad_line)}
    before = {a["actor_id"] for a in _actors(cluster, SCORER)}
    out = tmp_path / "scored"
    cmd = [str(BIN / "ray-app"), "predict", "--data", str(source), "--out", str(out),
           "--actors", "2", "--json", "--ray-address", cluster.address,
           "--tracking-uri", f"sqlite:///{clean_run['work'] / 'mlflow.db'}"]  # fmt: skip
    log = tmp_path / "predict.log"
    proc = subprocess.Popen(cmd, env=cluster.env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=log.open("w"), text=True)  # fmt: skip
    try:
        # Scoring has begun: two actors up and a block handed to one. Writing starts only once
        # every block is scored (the actors hold the CPUs until then).
        deadline = time.monotonic() + 300
        while True:
            scoring = [a for a in _actors(cluster, SCORER)
                       if a["actor_id"] not in before and a["state"] == "ALIVE"]  # fmt: skip
            batches = _scoring_tasks(cluster, scoring[0]["job_id"]) if len(scoring) == 2 else []
            if batches:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        lost = next(n for n in cluster.nodes if n.node_id == scoring[0]["node_id"])
        scored_at_kill = sum(t["state"] == "FINISHED" for t in batches)
        written_at_kill = len(list(out.glob("*.parquet")))
        cluster.replace_node(lost, "w5", tmp_path / NODE_LOST)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["rows_scored"] == len(expected) and result["bad_rows"] == 1
    errors = pd.read_csv(result["bad_rows_file"])["error"].tolist()
    assert errors == [f"{bad_file}: line {bad_line}, column 'age': 'abc' is not a number"]
    scored = pd.read_parquet(out, columns=["source_file", "source_row", "probability"])
    # Nothing lost, nothing twice: each valid (file, line) exactly once.
    assert len(scored) == len(expected)
    assert set(zip(scored["source_file"], scored["source_row"], strict=True)) == expected
    assert scored["probability"].between(0, 1).all()
    assert written_at_kill == 0 and scored_at_kill < 16  # the kill came mid-scoring
    # The scoring actors and the read tasks ran on worker nodes (the head has no CPUs); an
    # actor on the lost node was restarted elsewhere.
    head = next(n["node_id"] for n in cluster.alive_nodes() if n["is_head_node"])
    actors = [a for a in _actors(cluster, SCORER) if a["actor_id"] not in before]
    assert head not in {a["node_id"] for a in actors}
    assert any(int(a["num_restarts"]) >= 1 for a in actors), actors
    job = actors[0]["job_id"]
    reads = cluster.state(f"tasks?limit=10000&filter_keys=job_id&filter_predicates=%3D"
                          f"&filter_values={job}")["result"]  # fmt: skip
    read_nodes = {t["node_id"] for t in reads if t["name"] == "read"}
    assert read_nodes and head not in read_nodes, read_nodes
    print(
        f"predict: {scored_at_kill} of 16 blocks scored when {lost.name} was killed; "
        f"{len(scored)} rows out, {result['wall_s']} s"
    )


def test_serving_spreads_over_the_nodes_and_survives_losing_one_under_load(
    cluster, clean_run, tmp_path
):
    """`serve run` of the Serve config on the cluster with two replicas of each deployment,
    one on each worker node (2 CPUs each: the whole graph fits on one). Under load at
    concurrency 16 one node is SIGKILLed: no more requests fail than were in flight, and the
    graph answers from the surviving node (the time is printed: docs/multinode.md).

    Two changes to the committed config. Two replicas of each deployment instead of one: with
    one, the requests sent in the moment before HAProxy sees the lost Api replica fail too,
    and the graph is down until Serve re-creates it (measured: docs/multinode.md). And the
    proxies (HAProxy) run on the head only: on one host every node's proxy would listen on
    the same 127.0.0.1 port; in a cluster each pod has its own address."""
    old = list(cluster.nodes)
    for node in old:  # two bigger nodes instead of the 1-CPU ones
        cluster.kill_node(node)
        cluster.nodes.remove(node)
    for node in old:
        cluster.wait_dead(node)
    for node in ("s1", "s2"):
        cluster.add_node(node, num_cpus=2)
    port = free_port()
    log_to = PredictionLogConfig(location=str(tmp_path / "log"))
    args = ServeConfig(tracking_uri=f"sqlite:///{clean_run['work'] / 'mlflow.db'}",
                       prediction_log=log_to)  # fmt: skip
    doc = serve_config(args, "127.0.0.1", port)
    doc["proxy_location"] = "HeadOnly"
    for deployment in doc["applications"][0]["deployments"]:  # two of each, one per node
        if "autoscaling_config" in deployment:
            deployment["autoscaling_config"].update(min_replicas=2, initial_replicas=2)
        else:
            deployment["num_replicas"] = 2
    path = tmp_path / "serve-config.yaml"
    path.write_text(render_config(doc))
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([str(BIN / "serve"), "run", "--address", cluster.address, str(path)],
                            env=cluster.env, cwd=tmp_path, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).json().get("status") == "ready":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        replicas = _replicas(cluster, 6)
        for name in ("Api", "Preprocess", "Model"):  # each deployment on both nodes
            held = {a["node_id"] for a in replicas if a["class_name"].endswith(f":{name}")}
            assert held == {n.node_id for n in cluster.nodes}, (name, replicas)
        lost = cluster.nodes[0]  # holds one replica of each deployment
        survivor = next(n for n in cluster.nodes if n is not lost)
        with Load(url) as load:
            killed = cluster.kill_node(lost)
            killed_at = time.monotonic()
            cluster.nodes.remove(lost)
            load.wait_steady_after(killed_at)
        in_flight = load.in_flight_at(killed_at)
        failed = [r for r in load.results if r[2] != 200]
        recovered = load.first_success_after(killed_at) - killed_at
        print(f"serving: {lost.name} killed at {killed:.0f} with {in_flight} requests in flight; "
              f"{len(failed)} failed ({sorted({r[2] for r in failed})}); the first request "
              f"sent after the kill answered {recovered:.1f} s later")  # fmt: skip
        # What fails is what was in flight at the kill and what was sent in the moment before
        # Serve's routers saw the replicas gone (CI: 16 in flight, 17 failed, the last sent
        # just after the kill); nothing sent 2 s after the kill fails.
        late = [r for r in failed if r[0] > killed_at + 2.0]
        assert in_flight <= 16 and not late, (in_flight, late[:5], failed[:5])
        assert recovered < 90
        # The graph now lives on the surviving node.
        # Once Ray counts the node dead, the live replicas are the survivor's (the lost ones'
        # replacements wait for room: the survivor's 2 CPUs are in use).
        cluster.wait_dead(lost)
        left = _replicas(cluster, 3)
        assert {a["node_id"] for a in left} == {survivor.node_id}, left
        assert httpx.post(f"{url}/predict", json=load.body, timeout=30).status_code == 200
    finally:
        stop_group(proc, signal.SIGINT, 10)


def _replicas(cluster: LocalCluster, count: int) -> list[dict]:
    """The graph's live replicas, once there are `count` of them (State API)."""
    deadline = time.monotonic() + 60
    while True:
        found = cluster.state("actors?limit=10000&detail=true&filter_keys=state"
                              "&filter_predicates=%3D&filter_values=ALIVE")  # fmt: skip
        replicas = [a for a in found["result"] if a["class_name"].startswith("ServeReplica:")]
        if len(replicas) >= count or time.monotonic() > deadline:
            return replicas
        time.sleep(1)
