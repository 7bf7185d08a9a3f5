"""Deep ensemble benchmark: `ray-app train --ensemble K` for K = 1, 3, 5, then each K served.

    python benchmarks/ensemble_bench.py                  # ~15 min on 2 cores
    python benchmarks/ensemble_bench.py --ks 1 3 --no-serve

Training: the whole `ray-app train` command (data, training, evaluation on the official
adult.test, MLflow logging and registration) timed from outside, Ray's own training time, and
the test figures beside the HistGradientBoosting reference that the same run fits on the same
rows. Each K trains into a store of its own, so its version is that store's champion.
Serving: that champion in the Serve graph with Serve's cluster-wide settings (SERVE_ENV, as
`ray-app serve` runs it), wrk with single records at concurrency 1 and 32 (serve_bench's load).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from serve_bench import BIN, ENV, OUT, _run_target, setup

from ray_app.core.config import ServeConfig
from ray_app.serving.config import SERVE_ENV, render_config, serve_config

SCENARIOS = [("single c=1", 1, 1, 10), ("single c=32", 1, 32, 15)]
FIGURES = ("accuracy", "log_loss", "roc_auc")


def train(k: int, work: Path) -> dict[str, Any]:
    """`ray-app train --ensemble k` into work/k<k>/, timed from outside."""
    folder = work / f"k{k}"
    folder.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "ray-app"), "train", "--ensemble", str(k), "--json", "--tracking-uri",
         tracking, "--storage-path", str(folder / "ray_results")],
        env={**ENV, "RAY_ADDRESS": "local"}, cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ray-app train --ensemble {k} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.pop("checkpoint")  # a temp path (and the secrets gate reads it as a key)
    return {"tracking_uri": tracking, "command_wall_s": wall, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--no-serve", action="store_true", help="training only")
    parser.add_argument("--out", type=Path, default=OUT / "ensemble_bench.json")
    args = parser.parse_args()
    if args.no_serve:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="ensemble_bench_"))
    else:  # exits at once when wrk is missing, not after the training
        work, _ = setup("ensemble_bench", "sqlite:///unused.db")

    runs: dict[int, dict[str, Any]] = {}
    for k in args.ks:
        print(f"training K={k} ...", flush=True)
        runs[k] = train(k, work)
        row = runs[k]
        print(
            f"  {row['command_wall_s']:.1f} s, test acc {row['test_accuracy']:.4f} "
            f"log loss {row['test_log_loss']:.4f} AUC {row['test_roc_auc']:.4f}",
            flush=True,
        )
    if not args.no_serve:
        port = 8125
        for k, row in runs.items():
            config = work / f"k{k}" / "serve-config.yaml"
            config.write_text(render_config(serve_config(
                ServeConfig(tracking_uri=row["tracking_uri"]), "127.0.0.1", port)))  # fmt: skip
            row["serve"] = _run_target(
                f"K={k}", [str(BIN / "serve"), "run", str(config)], f"http://127.0.0.1:{port}",
                work / f"k{k}", {**ENV, "RAY_ADDRESS": "local", **SERVE_ENV}, SCENARIOS,
            )  # fmt: skip

    base = runs[args.ks[0]]
    report: dict[str, Any] = {"benchmark": "ensemble", "runs": {str(k): r for k, r in runs.items()}}
    titles = ("wall s", "x K=1", "train s", "acc", "log loss", "AUC", "p50 c=1", "x", "req/s c=32",
              "x")  # fmt: skip
    print(f"{'model':<22}" + "".join(f"{t:>11}" for t in titles))
    for k, row in runs.items():
        wall, wall0 = row["command_wall_s"], base["command_wall_s"]
        cells = [f"{wall:.1f}", f"{wall / wall0:.2f}", f"{row['train_wall_time_s']:.1f}",
                 *(f"{row[f'test_{f}']:.4f}" for f in FIGURES)]  # fmt: skip
        if "serve" in row:
            one, many = row["serve"]["single c=1"], row["serve"]["single c=32"]
            one0, many0 = base["serve"]["single c=1"], base["serve"]["single c=32"]
            rate, rate0 = many["req_per_s"], many0["req_per_s"]
            cells += [f"{one['p50_ms']:.1f}", f"{one['p50_ms'] / one0['p50_ms']:.2f}",
                      f"{rate:.0f}", f"{rate / rate0:.2f}"]  # fmt: skip
        print(f"{'single model' if k == 1 else f'ensemble of {k}':<22}"
              + "".join(f"{c:>11}" for c in cells))  # fmt: skip
    print(f"{'HistGradientBoosting':<22}{'':>11}{'':>11}{'':>11}"
          + "".join(f"{base[f'gbdt_test_{f}']:>11.4f}" for f in FIGURES)
          + "   (fitted in each run on the same rows; figures of the first)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
