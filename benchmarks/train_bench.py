"""Training benchmark: plain PyTorch loop vs Ray Train with 1 and 2 workers, same model and epochs.

    python benchmarks/train_bench.py                 # 8 epochs each, writes benchmarks/results/
    python benchmarks/train_bench.py --epochs 3 --subsample 5000   # a quick look

Per-epoch time is the steady-state interval between consecutive epoch ends (so it includes
Ray Train's report/checkpoint cost); fixed start-up overhead is wall time minus
epochs x per-epoch time (worker actors, process group, data transfer, teardown).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import ray
import torch

from ray_app.core.config import AppConfig
from ray_app.core.schema import LABEL_COLUMN
from ray_app.data.raydata import load_datasets
from ray_app.data.splits import load_splits
from ray_app.ml.features import Preprocessor
from ray_app.ml.metrics import binary_metrics
from ray_app.ml.scoring import Scorer, model_ready
from ray_app.training.contexts import LocalContext
from ray_app.training.distributed import train_distributed
from ray_app.training.loop import EncodedData, LoopSpec, train_loop

OUT = Path(__file__).resolve().parent / "results"


def _timing(history: list[dict[str, float]], wall: float) -> dict[str, float]:
    ends = [row["epoch_end_unix"] for row in history]
    per_epoch = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else wall
    return {
        "wall_s": wall,
        "per_epoch_s": per_epoch,
        "compute_per_epoch_s": sum(r["epoch_time_s"] for r in history[1:])
        / max(1, len(history) - 1),
        "startup_overhead_s": wall - len(history) * per_epoch,
    }


def _test_metrics(pre: Preprocessor, cfg: AppConfig, state: dict, splits: Any) -> dict[str, float]:
    prob = Scorer.from_state(pre, cfg.model, state).predict_proba(splits.test)
    return binary_metrics(splits.test[LABEL_COLUMN].to_numpy(), prob)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--subsample", type=int, default=None)
    parser.add_argument("--out", type=Path, default=OUT / "train_bench.json")
    args = parser.parse_args()

    cfg = AppConfig()
    cfg.data.subsample = args.subsample
    cfg.train.max_epochs = args.epochs
    cfg.train.patience = args.epochs + 1  # same number of epochs for every runner
    splits = load_splits(cfg.data)
    pre = Preprocessor.fit(splits.train, cfg.features)
    data = EncodedData.from_splits(splits, pre)
    rows = {"train_rows": len(data.train_y), "epochs": args.epochs}
    results: dict[str, dict[str, Any]] = {}

    # (a) plain single-process loop: no Ray, no checkpoints.
    start = time.perf_counter()
    spec = LoopSpec(cfg.model, cfg.train, pre.cardinalities, threads=1)
    plain = train_loop(spec, data, LocalContext())
    wall = time.perf_counter() - start
    assert plain.best_state is not None
    results["plain_pytorch"] = {
        **_timing(plain.meta["history"], wall),
        "workers": 1,
        **_test_metrics(pre, cfg, plain.best_state, splits),
    }

    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    try:
        # The Ray runners read the same rows through Ray Data (the path `ray-app train` uses).
        datasets = model_ready(load_datasets(cfg.data), pre)
        for workers in (1, 2):
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.ray.num_workers = workers
            run_cfg.ray.storage_path = Path("/tmp/ray_app_bench")
            outcome = train_distributed(
                run_cfg, datasets, pre.cardinalities, f"bench-{workers}w-{time.time():.0f}"
            )
            results[f"ray_train_{workers}w"] = {
                **_timing(outcome.meta["history"], outcome.wall_time_s),
                "workers": workers,
                **_test_metrics(pre, cfg, outcome.best_state, splits),
            }
    finally:
        ray.shutdown()

    plain = results["plain_pytorch"]["per_epoch_s"]
    for row in results.values():
        row["per_epoch_vs_plain"] = row["per_epoch_s"] / plain
    report = {
        "benchmark": "train",
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
        **rows,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    columns = [
        ("wall s", "wall_s", ".2f"),
        ("start-up s", "startup_overhead_s", ".2f"),
        ("s/epoch", "per_epoch_s", ".3f"),
        ("x plain", "per_epoch_vs_plain", ".2f"),
        ("test acc", "test_accuracy", ".4f"),
        ("test LL", "test_log_loss", ".4f"),
        ("AUC", "test_roc_auc", ".4f"),
    ]
    print(f"{'runner':<15}" + "".join(f"{title:>11}" for title, _, _ in columns))
    for name, row in results.items():
        print(f"{name:<15}" + "".join(f"{row[key]:>11{fmt}}" for _, key, fmt in columns))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
