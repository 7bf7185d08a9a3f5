"""Scale benchmark: the Ray Data path at 1x, 10x and 100x Adult, and today's in-memory path at 1x.

    python benchmarks/scale_bench.py                     # 1x, 10x, 100x; about 15 minutes
    python benchmarks/scale_bench.py --scales 1 10 --epochs 3

Data: a seeded bootstrap of adult.data's rows (k x 32,561 rows), written as Parquet files of at
most 400,000 rows; the test file is the shipped adult.test. Each scale runs in its own process
(so the driver's peak RSS is that scale's) with a fresh local Ray of 2 CPUs, 2 Ray Train
workers, the default model and batch size, early stopping off.

Measured per scale: data read + split, preprocessor fit, encoding (materialize), first-epoch
time, steady rows/s per worker (epochs 2+), peak RSS of the driver and of a worker, bytes the
object store spilled, test metrics, and batch scoring rows/s (`ray-app predict`'s function on
the same Parquet files). At 1x also the former in-memory path: the driver encodes everything
and `ray.put`s it, every worker `ray.get`s all of it and trains on its slice.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
ROWS_PER_FILE = 400_000


def write_bootstrap(scale: int, folder: Path, seed: int = 0) -> int:
    """k x adult.data rows sampled with replacement, as Parquet files; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ray_app.data.files import read_uci

    base = read_uci(REPO / "data" / "adult.data")
    n = scale * len(base)
    rows = np.random.default_rng(seed).integers(0, len(base), n)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, ROWS_PER_FILE)):
        part = base.iloc[rows[start : start + ROWS_PER_FILE]].reset_index(drop=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                       folder / f"part-{i:03d}.parquet")  # fmt: skip
    return n


def _spilled_bytes() -> int:
    from ray._private.internal_api import memory_summary

    text = memory_summary(stats_only=True)
    for line in text.splitlines():
        if line.strip().startswith("Spilled"):
            value, unit = line.split()[1:3]
            return int(float(value) * {"MiB": 2**20, "GiB": 2**30, "KiB": 2**10}.get(unit, 1))
    return 0


def _steady(history: list[dict[str, float]]) -> dict[str, float]:
    """First-epoch time and steady per-epoch time: the median of the epoch-to-epoch wall
    intervals from epoch 2 on (a median: on 2 shared cores one stalled interval of seconds
    otherwise decides a 1x figure of ~0.6 s)."""
    ends = [r["epoch_end_unix"] for r in history]
    per_epoch = float(np.median(np.diff(ends))) if len(ends) > 1 else float("nan")
    rows = history[-1]["rows"]
    return {
        "first_epoch_s": history[0]["epoch_time_s"],
        "per_epoch_s": per_epoch,
        "rows_per_worker": rows,
        "rows_per_s_per_worker": rows / per_epoch,
        "worker_peak_rss_mb": max(r["peak_rss_mb"] for r in history),
        # Time inside the batch loop only (no evaluation, checkpoint or report): the data path.
        "train_loop_s": float(np.median([r["train_time_s"] for r in history[1:] or history])),
    }


def run_scale(scale: int, epochs: int, work: Path, baseline: bool) -> dict[str, Any]:
    """One scale in this process (the driver whose peak RSS is measured)."""
    import ray

    from ray_app.core.config import AppConfig
    from ray_app.data.raydata import load_datasets, train_stats
    from ray_app.ml.features import Preprocessor
    from ray_app.ml.scoring import model_ready
    from ray_app.serving.batch import predict_files
    from ray_app.training.distributed import train_distributed

    folder = work / f"x{scale}"
    n = write_bootstrap(scale, folder)
    cfg = AppConfig()
    cfg.data.train_path = str(folder)
    cfg.data.test_path = str(REPO / "data" / "adult.test")
    cfg.train.max_epochs = epochs
    cfg.train.patience = epochs + 1
    cfg.ray.storage_path = work / "ray_results"
    out: dict[str, Any] = {"scale": scale, "rows": n}
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    try:
        start = time.perf_counter()
        splits = load_datasets(cfg.data)
        out["read_split_s"] = time.perf_counter() - start
        start = time.perf_counter()
        pre = Preprocessor.fit_stats(train_stats(splits.train), cfg.features)
        out["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        datasets = model_ready(splits, pre)
        out["encode_s"] = time.perf_counter() - start
        out["train_rows"] = splits.sizes()["train"]
        outcome = train_distributed(cfg, datasets, pre.cardinalities, f"scale-{scale}")
        out.update(_steady(outcome.meta["history"]))
        out["train_wall_s"] = outcome.wall_time_s
        bundle = _test_metrics(cfg, pre, outcome.best_state, work / f"x{scale}-ray-data", out)
        scoring = predict_files(str(folder), str(work / f"scored-{scale}"), str(bundle), "bench",
                                actors=2)  # fmt: skip
        out["batch_scoring_rows_per_s"] = scoring["rows_per_s"]
        out["spilled_bytes"] = _spilled_bytes()
        if baseline:
            out["in_memory"] = _in_memory(cfg, pre, splits, work)
            out["in_memory"]["accuracy_delta"] = (
                out["test_accuracy"] - out["in_memory"]["test_accuracy"]
            )
    finally:
        ray.shutdown()
    out["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _test_metrics(cfg: Any, pre: Any, state: Any, where: Path, out: dict[str, Any]) -> str:
    """Score adult.test with `state` (through `ray-app predict`'s function) into `out`;
    returns the bundle folder."""
    import ray

    from ray_app.ml.bundle import save_bundle
    from ray_app.ml.metrics import binary_metrics
    from ray_app.serving.batch import predict_files

    bundle = where / "bundle"
    save_bundle(bundle, state, cfg.model, pre.cardinalities, pre)
    scored = predict_files(str(cfg.data.test_path), str(where / "test"), str(bundle), "bench")
    assert scored["rows_scored"] == 16_281
    frame = ray.data.read_parquet(str(where / "test")).select_columns(
        ["income", "probability"]).to_pandas()  # fmt: skip
    out.update(binary_metrics(frame["income"].to_numpy(), frame["probability"].to_numpy()))
    return str(bundle)


def _in_memory(cfg: Any, pre: Any, splits: Any, work: Path) -> dict[str, Any]:
    """The former path: driver-side arrays, ray.put once, each worker ray.get + its slice."""
    import ray
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from ray_app.ml.bundle import WEIGHTS
    from ray_app.training.contexts import RayContext
    from ray_app.training.loop import OBJECTIVE, LoopSpec, train_loop
    from ray_app.training.rows import EncodedData

    frames = type("F", (), {"train": splits.train.to_pandas(), "val": splits.val.to_pandas()})
    data = EncodedData.from_splits(frames, pre)  # type: ignore[arg-type]
    ref = ray.put(data)
    spec = LoopSpec(cfg.model, cfg.train, pre.cardinalities)

    def worker(config: dict[str, Any]) -> None:
        full = ray.get(config["ref"])
        ctx = RayContext("train")
        rows = np.random.default_rng(0).permutation(len(full.train_y))
        mine = rows[ctx.world_rank :: ctx.world_size][: len(rows) // ctx.world_size]
        own = EncodedData(full.train_cat[mine], full.train_num[mine], full.train_y[mine],
                          full.val_cat, full.val_num, full.val_y)  # fmt: skip
        train_loop(config["spec"], own, ctx)

    import os

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    trainer = TorchTrainer(
        worker,
        train_loop_config={"spec": spec, "ref": ref},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name="in-memory",
            storage_path=str(cfg.ray.storage_path),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=OBJECTIVE, checkpoint_score_order="min"
            ),
        ),
    )
    result = trainer.fit()
    assert result.metrics_dataframe is not None
    out = _steady(result.metrics_dataframe.to_dict("records"))
    best = result.get_best_checkpoint(metric=OBJECTIVE, mode="min")
    assert best is not None
    with best.as_directory() as directory:
        state = torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True)
    _test_metrics(cfg, pre, state, work / "x1-in-memory", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT / "scale_bench.json")
    args = parser.parse_args()
    if args.one is not None:  # a child process: one scale, JSON on stdout
        result = run_scale(args.one, args.epochs, args.work, baseline=args.one == 1)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    work = Path(tempfile.mkdtemp(prefix="scale_bench_"))
    results = []
    try:
        for scale in args.scales:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(scale), "--epochs", str(args.epochs),
                 "--work", str(work)], capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"scale {scale} failed:\n{proc.stderr[-4000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            shutil.rmtree(work / f"x{scale}", ignore_errors=True)
            shutil.rmtree(work / f"scored-{scale}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next(r for r in results if r["scale"] == 1) if any(
        r["scale"] == 1 for r in results) else results[0]  # fmt: skip
    for row in results:
        row["rows_per_s_vs_1x"] = row["rows_per_s_per_worker"] / base["rows_per_s_per_worker"]
        row["driver_rss_vs_1x"] = row["driver_peak_rss_mb"] / base["driver_peak_rss_mb"]
    report = {"benchmark": "scale", "epochs": args.epochs, "workers": 2,
              "machine": {"platform": platform.platform()}, "results": results}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    columns = [
        ("rows", "rows", ",.0f"), ("read+split s", "read_split_s", ".1f"),
        ("fit s", "fit_s", ".1f"), ("encode s", "encode_s", ".1f"),
        ("1st epoch s", "first_epoch_s", ".1f"), ("s/epoch", "per_epoch_s", ".2f"),
        ("rows/s/worker", "rows_per_s_per_worker", ",.0f"), ("vs 1x", "rows_per_s_vs_1x", ".2f"),
        ("driver MB", "driver_peak_rss_mb", ".0f"), ("vs 1x", "driver_rss_vs_1x", ".2f"),
        ("worker MB", "worker_peak_rss_mb", ".0f"), ("spilled MB", "spilled_bytes", ".0f"),
        ("test acc", "test_accuracy", ".4f"), ("test LL", "test_log_loss", ".4f"),
        ("score rows/s", "batch_scoring_rows_per_s", ",.0f"),
    ]  # fmt: skip
    print("| scale | " + " | ".join(title for title, _, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in results:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key, float("nan"))
            value = value / 2**20 if key == "spilled_bytes" else value
            cells.append(format(value, fmt))
        print(f"| {row['scale']}x | " + " | ".join(cells) + " |")
    if "in_memory" in base:
        mem = base["in_memory"]
        ratio = base["per_epoch_s"] / mem["per_epoch_s"]
        print(f"\n1x in-memory path: {mem['per_epoch_s']:.2f} s/epoch, "
              f"{mem['rows_per_s_per_worker']:,.0f} rows/s/worker; Ray Data path "
              f"{base['per_epoch_s']:.2f} s/epoch = {ratio:.2f}x; batch loop "
              f"{mem['train_loop_s']:.2f} s vs {base['train_loop_s']:.2f} s = "
              f"{base['train_loop_s'] / mem['train_loop_s']:.2f}x; test accuracy "
              f"{mem['test_accuracy']:.4f} vs {base['test_accuracy']:.4f} "
              f"(delta {mem['accuracy_delta']:+.4f})")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
