"""Search benchmark: the same sampled configs with ASHA and at full budget, then retrain the best.

python benchmarks/tune_bench.py                    # 16 trials x 16 epochs, writes results/
python benchmarks/tune_bench.py --trials 6 --epochs 4 --subsample 4000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from ray_app.core.config import AppConfig
from ray_app.training.jobs import prepare_datasets, run_train_job
from ray_app.training.search import apply_params, search_space
from ray_app.training.tune import run_search, summarise_grid

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--subsample", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "tune_bench.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tune_bench_"))
    cfg = AppConfig()
    cfg.data.subsample = args.subsample
    cfg.ray.storage_path = work / "ray_results"
    cfg.tracking.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    cfg.search.num_samples = args.trials
    cfg.search.max_epochs = args.epochs
    cfg.search.seed = args.seed
    runs: dict[str, dict[str, Any]] = {}
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    try:
        prepared = prepare_datasets(cfg)
        pre, datasets = prepared.pre, prepared.encoded
        train_rows = datasets["train"].count()
        for scheduler in ("asha", "fifo"):
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.search.scheduler = scheduler
            start = time.perf_counter()
            grid = run_search(run_cfg, datasets, pre.cardinalities, f"bench-{scheduler}")
            runs[scheduler] = {**summarise_grid(grid), "wall_s": time.perf_counter() - start}
        asha, full = runs["asha"], runs["fifo"]
        best_cfg = apply_params(cfg, asha["best_config"], search_space(args.epochs))
        retrained = run_train_job(best_cfg).to_json()
    finally:
        ray.shutdown()

    report = {
        "benchmark": "tune",
        "trials": args.trials,
        "epoch_budget": args.epochs,
        "train_rows": train_rows,
        "asha": {k: v for k, v in asha.items()},
        "full_budget": {k: v for k, v in full.items()},
        "asha_epoch_fraction": asha["epochs_consumed"] / full["epochs_consumed"],
        "asha_best_vs_full_best": asha["best_val_log_loss"] / full["best_val_log_loss"] - 1,
        "asha_settings": {
            "grace_period": cfg.search.grace_period,
            "reduction_factor": cfg.search.reduction_factor,
        },
        "retrained_best": {
            k: retrained[k]
            for k in (
                "test_accuracy",
                "test_log_loss",
                "test_roc_auc",
                "test_f1",
                "best_val_log_loss",
                "epochs_run",
                "train_wall_time_s",
            )
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))

    print(f"{'search':<12}{'trials':>7}{'epochs':>8}{'stopped':>9}{'wall s':>8}{'best val LL':>13}")
    for name, row in (("ASHA", asha), ("full budget", full)):
        print(
            f"{name:<12}{row['trials']:>7}{row['epochs_consumed']:>8}{row['stopped_early']:>9}"
            f"{row['wall_s']:>8.1f}{row['best_val_log_loss']:>13.4f}"
        )
    print(
        f"ASHA used {report['asha_epoch_fraction']:.0%} of the epochs; its best is "
        f"{report['asha_best_vs_full_best']:+.2%} vs the full search's best"
    )
    r = report["retrained_best"]
    print(
        f"retrained best (Ray Train): test accuracy {r['test_accuracy']:.4f}, "
        f"log loss {r['test_log_loss']:.4f}, ROC-AUC {r['test_roc_auc']:.4f}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
