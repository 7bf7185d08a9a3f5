"""Serving benchmark: the Ray Serve graph vs a plain FastAPI+uvicorn process, same model.

    python benchmarks/serve_bench.py                 # trains a model first (temp MLflow store)
    python benchmarks/serve_bench.py --tracking-uri sqlite:///$PWD/mlflow.db   # use yours

Three servers run as subprocesses on this machine, one after the other: `ray-app serve` (the
Serve config with Serve's cluster-wide settings, SERVE_ENV, in its environment: HAProxy and
direct ingress), `serve run` of the same config as Ray users start it (no environment: only
what the config carries), and the plain process. The load generator is `wrk` (Debian package
`wrk`), which shares the same CPUs. Single-record requests at concurrency 1, 8 and 32,
1,000-record requests, then an overload (concurrency 256): Serve answers what it cannot queue
with 503 (counted as `busy`), the plain process queues everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ray_app.core.config import DataConfig, ServeConfig
from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.data.splits import load_splits
from ray_app.serving.config import SERVE_ENV, render_config, serve_config

OUT = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
SCENARIOS = [  # (name, records per request, concurrency, seconds)
    ("single c=1", 1, 1, 10),
    ("single c=8", 1, 8, 10),
    ("single c=32", 1, 32, 15),
    ("batch 1000 c=2", 1000, 2, 10),
    ("overload c=256", 1, 256, 10),
]


def _records(n: int) -> list[dict[str, Any]]:
    test = load_splits(DataConfig()).test[FEATURE_COLUMNS].head(n).astype(object)
    return [{k: (None if v != v else v) for k, v in r.items()} for r in test.to_dict("records")]


WRK_SCRIPT = """
local f = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
"""


def _ms(text: str) -> float:
    """wrk's '5.51ms' / '1.20s' / '850.00us' -> milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def _load(url: str, body_file: Path, concurrency: int, seconds: int, work: Path) -> dict:
    """Drive `url` with wrk (C, one thread): a Python client on these 2 cores was itself the
    bottleneck and made the tail (p99 at concurrency 32 of 470-830 ms for both servers)."""
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    env = {**ENV, "BODY_FILE": str(body_file)}
    base = ["wrk", "-t1", f"-c{concurrency}", "--latency", "-s", str(script), url]
    subprocess.run([*base[:3], "-d2s", *base[3:]], env=env, check=True, capture_output=True)
    out = subprocess.run([*base[:3], f"-d{seconds}s", "--timeout", "10s", *base[3:]], env=env,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if not latency:  # nothing answered: wrk prints no distribution
        raise RuntimeError(f"wrk got no answer at concurrency {concurrency}:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)  # fmt: skip
    return {
        "requests": total,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        # Non-2xx: Serve's busy answers (503) under overload, errors anywhere else.
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(g) for g in socket.groups()) if socket else 0,
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
    name: str,
    command: list[str],
    url: str,
    work: Path,
    env: dict[str, str],
    scenarios: list[tuple[str, int, int, int]] = SCENARIOS,
) -> dict[str, Any]:
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    results: dict[str, Any] = {}
    try:
        _wait_healthy(url, proc)
        bodies = {1: work / "one.json", 1000: work / "batch.json"}
        bodies[1].write_text(json.dumps(_records(1)[0]))
        bodies[1000].write_text(json.dumps(_records(1000)))
        for scenario, size, concurrency, seconds in scenarios:
            row = _load(f"{url}/predict", bodies[size], concurrency, seconds, work)
            row["rows_per_s"] = row["req_per_s"] * size
            results[scenario] = row
            print(
                f"  {name:<9} {scenario:<15} {row['req_per_s']:8.1f} req/s "
                f"p50 {row['p50_ms']:6.1f} ms p99 {row['p99_ms']:6.1f} ms "
                f"non-2xx {row['non_2xx']} socket errors {row['socket_errors']}"
            )
    finally:
        _stop(proc)
        log.close()
    return results


def setup(name: str, tracking_uri: str | None) -> tuple[Path, str]:
    """A work folder, and the store whose champion is served: `tracking_uri`, else a fresh one
    with a default `ray-app train` in it. Exits when wrk is missing."""
    if shutil.which("wrk") is None:
        sys.exit(f"{name} needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix=f"{name}_"))
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        print("training a model for the benchmark ...")
        subprocess.run(
            ["ray-app", "train", "--json", "--tracking-uri", tracking_uri,
             "--storage-path", str(work / "ray_results")],
            env=ENV, cwd=work, check=True, capture_output=True,
        )  # fmt: skip
    return work, tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="use this store's champion")
    parser.add_argument("--out", type=Path, default=OUT / "serve_bench.json")
    args = parser.parse_args()

    work, tracking = setup("serve_bench", args.tracking_uri)

    serve_port, plain_port = 8123, 8124
    config = work / "serve-config.yaml"
    config.write_text(render_config(serve_config(ServeConfig(tracking_uri=tracking),
                                                 "127.0.0.1", serve_port)))  # fmt: skip
    # A fresh local Ray each time (RAY_ADDRESS=local), whatever /tmp/ray names.
    local = {**ENV, "RAY_ADDRESS": "local"}
    command = [str(BIN / "serve"), "run", str(config)]
    url = f"http://127.0.0.1:{serve_port}"
    targets = {
        # (HAProxy's stats/metrics listeners keep their defaults, 8404 and 9101.)
        "serve": _run_target("serve", command, url, work, {**local, **SERVE_ENV}),
        "serve run": _run_target("serve-run", command, url, work, local),
        "plain": _run_target(
            "plain",
            [sys.executable, "-m", "ray_app.serving.plain", "--tracking-uri", tracking,
             "--port", str(plain_port)],
            f"http://127.0.0.1:{plain_port}", work, ENV,
        ),
    }  # fmt: skip

    report: dict[str, Any] = {"benchmark": "serve", **targets, "ratio": {}}
    titles = ("serve req/s", "plain req/s", "ratio", "serve p50", "serve p99", "plain p50",
              "plain p99", "run p50", "run req/s", "serve busy")  # fmt: skip
    print(f"{'scenario':<16}" + "".join(f"{t:>12}" for t in titles))
    for scenario, *_ in SCENARIOS:
        s, r, p = (targets[t][scenario] for t in ("serve", "serve run", "plain"))
        ratio = s["req_per_s"] / p["req_per_s"]
        report["ratio"][scenario] = ratio
        cells = (f"{s['req_per_s']:.1f}", f"{p['req_per_s']:.1f}", f"{ratio:.2f}",
                 f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", f"{p['p50_ms']:.1f}",
                 f"{p['p99_ms']:.1f}", f"{r['p50_ms']:.1f}", f"{r['req_per_s']:.1f}",
                 f"{s['non_2xx'] / max(s['requests'], 1):.0%}")  # fmt: skip
        print(f"{scenario:<16}" + "".join(f"{c:>12}" for c in cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
