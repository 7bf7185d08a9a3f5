"""Soak: concurrency 32 against the Serve graph for 10 minutes, minute by minute.

    python benchmarks/soak_bench.py                  # trains a model first (temp MLflow store)
    python benchmarks/soak_bench.py --tracking-uri sqlite:///$PWD/mlflow.db --minutes 10

`serve run` of the Serve config with SERVE_ENV (what `ray-app serve` starts), one minute of
warm-up, then `wrk` for one minute at a time (single records, concurrency 32). Each minute:
req/s, p50, p99, non-2xx and socket errors, and the RSS of every Serve replica (read from
/proc). Targets (issue 16): no error at all; last minute's p99 at most 1.5x the first's;
every replica's RSS at most 10 % above its size after warm-up.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from serve_bench import BIN, ENV, OUT, _load, _records, _stop, _wait_healthy, setup

from ray_app.core.config import ServeConfig
from ray_app.serving.config import SERVE_ENV, render_config, serve_config


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _replica_rss(root: int) -> dict[str, float]:
    """MB of resident memory per Serve replica below `root` (name from its process title)."""
    rss: dict[str, float] = {}
    for pid in _descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        name = re.search(r"ServeReplica:adult-income:(\w+)", title)
        kb = re.search(r"VmRSS:\s+(\d+)", status)
        if name and kb:
            rss[name.group(1)] = int(kb.group(1)) / 1024
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="use this store's champion")
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT / "soak_bench.json")
    args = parser.parse_args()

    work, tracking = setup("soak_bench", args.tracking_uri)
    port = 8125
    config = work / "serve-config.yaml"
    config.write_text(render_config(serve_config(ServeConfig(tracking_uri=tracking),
                                                 "127.0.0.1", port)))  # fmt: skip
    body = work / "one.json"
    body.write_text(json.dumps(_records(1)[0]))
    url = f"http://127.0.0.1:{port}"
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", str(config)], env={**ENV, "RAY_ADDRESS": "local", **SERVE_ENV},
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    minutes: list[dict[str, Any]] = []
    try:
        _wait_healthy(url, proc)
        _load(f"{url}/predict", body, args.concurrency, 60, work)  # warm-up
        baseline = _replica_rss(proc.pid)
        print(f"after warm-up, replica RSS (MB): {baseline}")
        print(f"{'minute':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
              f"{'socket':>7}  RSS MB (Api / Preprocess / Model)")  # fmt: skip
        for minute in range(1, args.minutes + 1):
            row = _load(f"{url}/predict", body, args.concurrency, 60, work)
            row["rss_mb"] = _replica_rss(proc.pid)
            row["minute"] = minute
            minutes.append(row)
            rss = " / ".join(f"{row['rss_mb'].get(d, 0):.0f}"
                             for d in ("Api", "Preprocess", "Model"))  # fmt: skip
            print(f"{minute:>6} {row['req_per_s']:>8.1f} {row['p50_ms']:>8.1f} "
                  f"{row['p99_ms']:>8.1f} {row['non_2xx']:>8} {row['socket_errors']:>7}  {rss}",
                  flush=True)  # fmt: skip
    finally:
        _stop(proc)
        log.close()

    errors = sum(m["non_2xx"] + m["socket_errors"] for m in minutes)
    p99_ratio = minutes[-1]["p99_ms"] / minutes[0]["p99_ms"]
    growth = {d: minutes[-1]["rss_mb"][d] / mb - 1 for d, mb in baseline.items()
              if d in minutes[-1]["rss_mb"]}  # fmt: skip
    checks = {
        "no errors": errors == 0,
        "p99 last / first minute <= 1.5": p99_ratio <= 1.5,
        "replica RSS growth <= 10%": bool(growth) and max(growth.values()) <= 0.10,
    }
    report = {"benchmark": "soak", "concurrency": args.concurrency, "minutes": minutes,
              "rss_after_warmup_mb": baseline, "errors": errors, "p99_ratio": p99_ratio,
              "rss_growth": growth, "checks": checks}  # fmt: skip
    print(
        f"errors {errors}; p99 last/first {p99_ratio:.2f}; RSS growth "
        + ", ".join(f"{d} {g:+.1%}" for d, g in growth.items())
    )
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
