"""`ray job submit --working-dir . -- ray-app train ...` against a real `ray start --head`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_ray_job_submit_runs_the_train_command(head, tmp_path: Path):
    url, env = head["url"], head["env"]  # the tier's shared head (tests/e2e/conftest.py)
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
