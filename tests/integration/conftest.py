"""What the integration tier shares: one `ray start --head` for the commands the tests run as
subprocesses (they join it with --ray-address instead of starting a Ray each), and one small
trained model for every test that only needs *a* registered model.

Tests that start a Ray of their own say why (the embedded default, an interrupted driver, a
`serve run`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.support.procs import ray_head


@pytest.fixture(scope="session")
def head(tmp_path_factory):
    """A real head with token auth (2 CPUs, as this machine has): {url, address, env}.

    `address` is what --ray-address takes; `env` carries the head's token."""
    work = tmp_path_factory.mktemp("head")
    with ray_head(work / "head.log") as (url, env):
        yield {"url": url, "address": env["TEST_RAY_GCS_ADDRESS"], "env": env, "work": work}


@pytest.fixture(scope="session")
def small_model(head, tmp_path_factory):
    """`ray-app train --config run.yaml` on the shared head (3,000 rows, 2 epochs): the one
    model the tier trains for tests that only need a registered version (copy the store with
    `registry_copy` before changing it). {work, tracking, result, config}."""
    work = tmp_path_factory.mktemp("small-model")
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    # Settings from a config file (`--config`), one of them overridden on the command line.
    config = {"data": {"subsample": 3000}, "train": {"max_epochs": 5},
              "ray": {"storage_path": str(work / "rr")}}  # fmt: skip
    (work / "run.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        ["ray-app", "train", "--config", str(work / "run.yaml"), "--epochs", "2", "--json",
         "--tracking-uri", tracking, "--ray-address", head["address"]],
        env=head["env"], capture_output=True, text=True, timeout=600, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mlflow.set_tracking_uri(tracking)
    logged = yaml.safe_load(
        mlflow.artifacts.load_text(f"runs:/{result['mlflow_run_id']}/config.yaml")
    )
    return {"work": work, "tracking": tracking, "result": result, "config": logged}


def registry_copy(model: dict, dest: Path) -> str:
    """A copy of the small model's MLflow store (its artifacts stay where they are, read
    only): a test that registers or moves aliases works on its own registry."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(model["work"]) / "mlflow.db", dest / "mlflow.db")
    return f"sqlite:///{dest / 'mlflow.db'}"
