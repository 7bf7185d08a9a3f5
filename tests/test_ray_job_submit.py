"""`ray job submit --working-dir . -- ray-app train ...` against a real `ray start --head`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, free_port, stop_group

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _wait_for_dashboard(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # up, and asking for the auth token
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited: {log.read_text()[-2000:]}")
            time.sleep(1)
    pytest.fail("Ray dashboard did not come up in 90 s")


@pytest.fixture()
def ray_head(tmp_path: Path):
    """A head node in its own process group, stopped by PID (never `ray stop`, which kills all)."""
    dashboard = free_port()
    # Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjob", dir="/tmp"))
    # Token auth as Ray 2.60 wants it, with a token of the test's own: a fresh machine has no
    # ~/.ray/auth_token, and the user's should not be touched.
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=(tmp_path / "head.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(url, proc, tmp_path / "head.log")
        yield url, env
    finally:
        # `ray start --block` stops its children on SIGTERM; the group kill is the fallback.
        stop_group(proc, signal.SIGTERM, 20)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_train_command(ray_head, tmp_path: Path):
    url, env = ray_head
    proc = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            f"--address={url}",
            f"--working-dir={REPO}",
            "--",
            "ray-app",
            "train",
            "--subsample",
            "3000",
            "--epochs",
            "2",
            "--json",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--storage-path",
            str(tmp_path / "ray_results"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('{"test_accuracy"'))
    result = json.loads(line)
    assert result["model_version"] == 1
    assert (tmp_path / "mlflow.db").exists()
