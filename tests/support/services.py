"""Servers the tests start and stop: a real `mlflow server` (here on a sqlite store; the
platform tests also run it on PostgreSQL) and a real Prometheus (Debian's, installed by
`.ci/system_tools.sh`)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from .procs import BIN, ENV, free_port, stop_group, wait_http


@contextlib.contextmanager
def mlflow_server(work: Path, port: int, backend: str | None = None,
                  extra: list[str] | None = None) -> Iterator[str]:  # fmt: skip
    """`mlflow server` on 127.0.0.1:`port` (proxied artifacts under `work`); yields its URL.
    Its own process group, stopped by PID."""
    store = backend or f"sqlite:///{work / 'mlflow-server.db'}"
    log = (work / f"mlflow-{port}.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", store, "--artifacts-destination", str(work / "artifacts"),
         "--workers", "1", *(extra or [])],
        env=ENV, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, 120,
                  lambda: (work / f"mlflow-{port}.log").read_text()[-3000:])  # fmt: skip
        yield url
    finally:
        stop_group(proc, signal.SIGTERM, 10)
        log.close()


@contextlib.contextmanager
def prometheus_server(work: Path, target: str, interval_s: float = 1.0) -> Iterator[str]:
    """A real Prometheus scraping `target` (host:port, path /metrics) every `interval_s`;
    yields its URL. Its own process group and storage folder, stopped by PID."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run .ci/system_tools.sh (Debian package prometheus)"
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{round(interval_s * 1000)}ms",
                   "evaluation_interval": f"{round(interval_s * 1000)}ms"},
        "scrape_configs": [{"job_name": "ray-app", "static_configs": [{"targets": [target]}]}],
    }))  # fmt: skip
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", proc, 60, lambda: (work / "prometheus.log").read_text()[-3000:])
        yield url
    finally:
        stop_group(proc, signal.SIGTERM, 10)
        log.close()


def prom_query(url: str, expr: str) -> list[dict]:
    """An instant query through Prometheus's HTTP API: the result's series."""
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=30) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])
