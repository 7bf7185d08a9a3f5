"""Servers the tests start and stop: a real `mlflow server` (here on a sqlite store; the
platform tests also run it on PostgreSQL)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .procs import BIN, ENV, stop_group


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
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # up (an auth app answers 401)
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n"
                                f"{(work / f'mlflow-{port}.log').read_text()[-3000:]}")  # fmt: skip
                time.sleep(0.5)
        yield url
    finally:
        stop_group(proc, signal.SIGTERM, 10)
        log.close()
