"""Multi-node on one machine: training speed with both workers on one node vs one per node, and
the time to recover from a node lost mid-training.

    python benchmarks/multinode_bench.py                 # full Adult, 3 epochs, one round
    python benchmarks/multinode_bench.py --subsample 3000 --epochs 4

Real Ray nodes (tests/support/cluster.py: a head with no CPUs, worker nodes each with their own
raylet and object store). "one node": one worker node of 2 CPUs holds both Ray Train workers;
"two nodes": two worker nodes of 1 CPU, one worker each, so the encoded blocks cross between
object stores. Rows/s per worker is rank 0's training rows over its training time, per epoch
(the first epoch included: it pays the shard's first read). Recovery: both ranks stopped in
epoch 3 (the tests' hook), the node of rank 1 SIGKILLed and a new node started; from the kill
to the end of the restarted group's first epoch, and to the head counting the node dead.

All of it shares 2 cores here: three raylets, their workers and the driver. Read the ratios,
not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.cluster import LocalCluster, local_cluster  # noqa: E402
from tests.support.faults import NODE_LOST  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent


def _train(cluster: LocalCluster, work: Path, args: argparse.Namespace, hook: str | None = None,
           ) -> subprocess.Popen:  # fmt: skip
    cmd = [str(BIN / "ray-app"), "train", "--ray-address", cluster.address, "--workers", "2",
           "--epochs", str(args.epochs), "--json", "--no-register",
           "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
           "--storage-path", str(work / "rr")]  # fmt: skip
    if args.subsample:
        cmd += ["--subsample", str(args.subsample)]
    env = {**cluster.env, **({"RAY_APP_EPOCH_HOOK": hook} if hook else {})}
    return subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.PIPE,
                            stderr=(work / "train.log").open("w"), text=True)  # fmt: skip


def _result(proc: subprocess.Popen, work: Path) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"train failed:\n{(work / 'train.log').read_text()[-3000:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def _history(result: dict[str, Any]) -> list[dict[str, Any]]:
    meta = Path(result["checkpoint"]) / "train_meta.json"
    return list(json.loads(meta.read_text())["history"])


def _speed(name: str, result: dict[str, Any], wall: float) -> dict[str, Any]:
    history = _history(result)
    per_epoch = [r["rows"] / r["train_time_s"] for r in history]
    return {"placement": name, "nodes": len(set(result["worker_nodes"])),
            "rows_per_s_per_worker": round(statistics.median(per_epoch), 1),
            "rows_per_s_per_worker_epochs": [round(v, 1) for v in per_epoch],
            "epoch_s": round(statistics.median(r["epoch_time_s"] for r in history), 3),
            "train_wall_s": result["train_wall_time_s"], "command_wall_s": round(wall, 1),
            "test_log_loss": result["test_log_loss"]}  # fmt: skip


def _timed(cluster: LocalCluster, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    start = time.monotonic()
    result = _result(_train(cluster, work, args), work)
    return {"result": result, "wall": time.monotonic() - start}


def _recovery(cluster: LocalCluster, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    proc = _train(cluster, work, args, "tests.support.faults:park_in_epoch_3")
    deadline = time.monotonic() + 600
    while not list((work / "rr").glob("train-*/parked-1.txt")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((work / "train.log").read_text()[-3000:])
        time.sleep(0.2)
    run_dir = next((work / "rr").glob("train-*/parked-1.txt")).parent
    while not (run_dir / "parked-0.txt").exists():
        time.sleep(0.2)
    lost = cluster.node_of(int((run_dir / "parked-1.txt").read_text()))
    killed_at, _ = cluster.replace_node(lost, "w3", run_dir / NODE_LOST)
    joined = time.time() - killed_at
    dead = cluster.wait_dead(lost) + joined  # the head counts it dead (its health checks)
    result = _result(proc, work)
    history = _history(result)
    return {"epochs": args.epochs, "worker_group_restarts": result["worker_group_restarts"],
            "resumed_from_epochs": result["resumed_from_epochs"],
            "new_node_joined_s": round(joined, 1), "node_counted_dead_s": round(dead, 1),
            "first_epoch_after_kill_s": round(history[2]["epoch_end_unix"] - killed_at, 1),
            "test_log_loss": result["test_log_loss"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsample", type=int, default=0, help="rows (0: all of Adult)")
    parser.add_argument("--epochs", type=int, default=4, help=">= 3: the loss is in epoch 3")
    parser.add_argument("--out", type=Path, default=OUT / "multinode_bench.json")
    args = parser.parse_args()
    if args.epochs < 3:
        raise SystemExit("--epochs must be >= 3 (the node is lost in epoch 3)")
    root = Path(tempfile.mkdtemp(prefix="multinode-bench-"))
    rows = []
    one = root / "one"
    one.mkdir()
    with local_cluster(one, workers=0) as cluster:
        cluster.add_node("big", num_cpus=2)
        run = _timed(cluster, one, args)
        rows.append(_speed("both workers on one node (2 CPUs)", run["result"], run["wall"]))
    two = root / "two"
    two.mkdir()
    with local_cluster(two, workers=2) as cluster:
        run = _timed(cluster, two, args)
        rows.append(_speed("one worker per node (2 x 1 CPU)", run["result"], run["wall"]))
        (two / "loss").mkdir()
        recovery = _recovery(cluster, two / "loss", args)
    base = rows[0]["rows_per_s_per_worker"]
    print(f"\ntraining ({args.subsample or 'all'} rows, {args.epochs} epochs, 2 workers)")
    print(f"{'placement':<36} {'nodes':>5} {'rows/s/worker':>13} {'x':>5} {'epoch s':>8} "
          f"{'train s':>8} {'command s':>9}")  # fmt: skip
    for row in rows:
        print(f"{row['placement']:<36} {row['nodes']:>5} {row['rows_per_s_per_worker']:>13.0f} "
              f"{row['rows_per_s_per_worker'] / base:>5.2f} {row['epoch_s']:>8.3f} "
              f"{row['train_wall_s']:>8.1f} {row['command_wall_s']:>9.1f}")  # fmt: skip
    print(f"\nnode lost in epoch 3: {recovery}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": "2 cores, no GPU",
        "subsample": args.subsample or None, "epochs": args.epochs,
        "training": rows, "recovery": recovery}, indent=1) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
