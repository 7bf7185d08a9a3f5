"""Servers the tests start and stop: a real `mlflow server` (here on a sqlite store; the
platform tests also run it on PostgreSQL)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .procs import BIN, ENV, stop_group, wait_http


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
