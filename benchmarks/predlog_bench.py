"""What the prediction log costs: the Serve graph with the log off and on, same model, wrk.

    python benchmarks/predlog_bench.py                 # trains a model first (temp MLflow store)
    python benchmarks/predlog_bench.py --tracking-uri sqlite:///$PWD/mlflow.db --rounds 2

`ray-app serve`'s configuration (SERVE_ENV: HAProxy, direct ingress) with
`prediction_log.location` off, then a folder, alternating for `--rounds` rounds (the machine's
drift averages out); single records at concurrency 32 and 1,000-record batches. Targets
(issue 25): throughput with the log >= 0.95x without, p99 <= 1.1x. Also reports the log's bytes
per 1,000 records (Parquet, snappy, all 14 features).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import BIN, ENV, OUT, _run_target, setup

from ray_app.core.config import PredictionLogConfig, ServeConfig
from ray_app.serving.config import SERVE_ENV, render_config, serve_config

SCENARIOS = [("single c=32", 1, 32, 15), ("batch 1000 c=2", 1000, 2, 10)]


def _log_size(root: Path) -> tuple[int, int]:
    """(bytes, rows) of the complete record files under `root`."""
    files = [p for p in root.glob("records/date=*/*.parquet") if not p.name.startswith(".")]
    return sum(p.stat().st_size for p in files), sum(pq.read_metadata(p).num_rows for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="use this store's champion")
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs to run")
    parser.add_argument("--out", type=Path, default=OUT / "predlog_bench.json")
    args = parser.parse_args()

    work, tracking = setup("predlog_bench", args.tracking_uri)
    port = 8125
    url = f"http://127.0.0.1:{port}"
    env = {**ENV, **SERVE_ENV, "RAY_ADDRESS": "local"}
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    log_root = work / "predictions"
    for round_ in range(args.rounds):
        for mode in ("off", "on"):
            where = str(log_root) if mode == "on" else "off"
            log = PredictionLogConfig(location=where)
            serve_args = ServeConfig(tracking_uri=tracking, prediction_log=log)
            config = work / f"serve-{mode}.yaml"
            config.write_text(render_config(serve_config(serve_args, "127.0.0.1", port)))
            name = f"log-{mode}-{round_}"
            command = [str(BIN / "serve"), "run", str(config)]
            runs[mode].append(_run_target(name, command, url, work, env, SCENARIOS))
    size, rows = _log_size(log_root)

    report: dict[str, Any] = {"benchmark": "prediction_log", "rounds": args.rounds, "runs": runs,
                              "log_bytes": size, "log_rows": rows,
                              "bytes_per_1000_records": round(1000 * size / max(rows, 1)),
                              "ratio": {}}  # fmt: skip
    print(f"\n{'scenario':<16}{'off req/s':>11}{'on req/s':>11}{'thr ratio':>11}"
          f"{'off p99':>10}{'on p99':>10}{'p99 ratio':>11}")  # fmt: skip
    for scenario, *_ in SCENARIOS:
        off = [r[scenario] for r in runs["off"]]
        on = [r[scenario] for r in runs["on"]]
        thr_off = statistics.mean(r["req_per_s"] for r in off)
        thr_on = statistics.mean(r["req_per_s"] for r in on)
        p99_off = statistics.mean(r["p99_ms"] for r in off)
        p99_on = statistics.mean(r["p99_ms"] for r in on)
        report["ratio"][scenario] = {"throughput": round(thr_on / thr_off, 3),
                                     "p99": round(p99_on / p99_off, 3)}  # fmt: skip
        print(f"{scenario:<16}{thr_off:>11.1f}{thr_on:>11.1f}{thr_on / thr_off:>11.2f}"
              f"{p99_off:>10.1f}{p99_on:>10.1f}{p99_on / p99_off:>11.2f}")  # fmt: skip
    print(
        f"log: {rows} records in {size} bytes = {report['bytes_per_1000_records']} bytes "
        "per 1,000 records"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
