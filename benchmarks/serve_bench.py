"""Serving benchmark: the Ray Serve graph vs a plain FastAPI+uvicorn process, same model.

    python benchmarks/serve_bench.py                 # trains a model first (temp MLflow store)
    python benchmarks/serve_bench.py --tracking-uri sqlite:///$PWD/mlflow.db   # use yours

Both servers run as subprocesses on this machine, one after the other; the load generator
(async httpx, in this process) shares the same CPUs. Single-record requests at concurrency
1, 8 and 32, then 1,000-record requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ray_app.config import DataConfig
from ray_app.data import FEATURE_COLUMNS, load_splits
from ray_app.serve import SERVE_ENV, ServeArgs, render_config, serve_config

OUT = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
SCENARIOS = [  # (name, records per request, concurrency, requests)
    ("single c=1", 1, 1, 400),
    ("single c=8", 1, 8, 1600),
    ("single c=32", 1, 32, 3200),
    ("batch 1000 c=2", 1000, 2, 60),
]


def _records(n: int) -> list[dict[str, Any]]:
    test = load_splits(DataConfig()).test[FEATURE_COLUMNS].head(n).astype(object)
    return [{k: (None if v != v else v) for k, v in r.items()} for r in test.to_dict("records")]


async def _load(url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(bodies),
        "req_per_s": len(bodies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": errors,
    }


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(1)
    raise RuntimeError(f"{url} did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _run_target(
    name: str, command: list[str], url: str, work: Path, env: dict[str, str]
) -> dict[str, Any]:
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    results: dict[str, Any] = {}
    try:
        _wait_healthy(url, proc)
        one = _records(1)[0]
        batch = _records(1000)
        asyncio.run(_load(f"{url}/predict", [json.dumps(one).encode()] * 100, 4))  # warm up
        for scenario, size, concurrency, n in SCENARIOS:
            body = json.dumps(batch if size > 1 else one).encode()
            row = asyncio.run(_load(f"{url}/predict", [body] * n, concurrency))
            row["rows_per_s"] = row["req_per_s"] * size
            results[scenario] = row
            print(
                f"  {name:<6} {scenario:<15} {row['req_per_s']:8.1f} req/s "
                f"p50 {row['p50_ms']:6.1f} ms p99 {row['p99_ms']:6.1f} ms errors {row['errors']}"
            )
    finally:
        _stop(proc)
        log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="use this store's champion")
    parser.add_argument("--out", type=Path, default=OUT / "serve_bench.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    tracking = args.tracking_uri
    if tracking is None:
        tracking = f"sqlite:///{work / 'mlflow.db'}"
        print("training a model for the benchmark ...")
        subprocess.run(
            ["ray-app", "train", "--json", "--tracking-uri", tracking,
             "--storage-path", str(work / "ray_results")],
            env=ENV, cwd=work, check=True, capture_output=True,
        )  # fmt: skip

    serve_port, plain_port = 8123, 8124
    config = work / "serve-config.yaml"
    config.write_text(render_config(serve_config(ServeArgs(tracking_uri=tracking),
                                                 "127.0.0.1", serve_port)))  # fmt: skip
    serve = _run_target("serve", [str(BIN / "serve"), "run", str(config)],
                        f"http://127.0.0.1:{serve_port}", work, {**ENV, **SERVE_ENV})  # fmt: skip
    plain = _run_target(
        "plain",
        [sys.executable, "-m", "ray_app.plain_server", "--tracking-uri", tracking,
         "--port", str(plain_port)],
        f"http://127.0.0.1:{plain_port}", work, ENV,
    )  # fmt: skip

    report: dict[str, Any] = {"benchmark": "serve", "serve": serve, "plain": plain, "ratio": {}}
    titles = ("serve req/s", "plain req/s", "ratio", "serve p50", "serve p99", "plain p50",
              "rows/s serve", "errors")  # fmt: skip
    print(f"{'scenario':<16}" + "".join(f"{t:>13}" for t in titles))
    for scenario, *_ in SCENARIOS:
        s, p = serve[scenario], plain[scenario]
        ratio = s["req_per_s"] / p["req_per_s"]
        report["ratio"][scenario] = ratio
        cells = (f"{s['req_per_s']:.1f}", f"{p['req_per_s']:.1f}", f"{ratio:.2f}",
                 f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", f"{p['p50_ms']:.1f}",
                 f"{s['rows_per_s']:.0f}", str(s["errors"] + p["errors"]))  # fmt: skip
        print(f"{scenario:<16}" + "".join(f"{c:>13}" for c in cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
