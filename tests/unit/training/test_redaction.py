"""A tracking URI with credentials is used, never logged:
`http://alice:s3cret@host:5000`  # pragma: allowlist secret (the test's)
not in the run's config.yaml or params, not in the train command's output or its `--json`
result (a job's log), not in the registry's error message, not in MLflow's "View run" line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

from ray_app.core.config import AppConfig, FeatureConfig, TrackingConfig
from ray_app.core.redact import redact
from ray_app.ml.features import Preprocessor
from ray_app.tracking import store
from ray_app.tracking.registry import RegistryUnreachable, pin
from ray_app.training import jobs
from ray_app.training.results import TrainResult
from tests.support.procs import REPO

SECRET = "s3cret"  # pragma: allowlist secret
URI = f"http://alice:{SECRET}@host:5000"


def test_redact_masks_userinfo_and_secret_parameters_only():
    assert redact(URI) == "http://***@host:5000"
    assert (
        redact("https://tok@h/x?a=1&password=p&token=t")
        == "https://***@h/x?a=1&password=***&token=***"
    )
    for plain in ("sqlite:///mlflow.db", "models:/adult-income@champion", "http://mlflow:5000"):
        assert redact(plain) == plain


def test_the_logged_config_and_params_hold_no_password(small_splits, tmp_path: Path):
    cfg = AppConfig()
    cfg.tracking.tracking_uri = URI
    cfg.ray.address = f"ray://bob:{SECRET}@head:10001"
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the real store
    with mlflow.start_run() as run:
        jobs._log_inputs(cfg, jobs.Prepared(small_splits, pre, {}), tmp_path)  # type: ignore[arg-type]
    logged = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
    assert SECRET not in logged and "http://***@host:5000" in logged
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["ray.address"] == "ray://***@head:10001"
    assert not [k for k, v in params.items() if SECRET in v]


def _result(cfg: AppConfig) -> TrainResult:
    """What run_train_job returns, through its own _train_result, from stand-in figures."""
    names = TrainResult.model_fields
    ev = SimpleNamespace(
        report={"metrics": {n: 0.5 for n in names if n.startswith("test_")},
                "slices": {"sex": {"demographic_parity_difference": 0.1}}},
        gbdt={n: 0.5 for n in names if n.startswith("gbdt_")},
    )  # fmt: skip
    outcome = SimpleNamespace(wall_time_s=1.0, meta={}, checkpoint_path="/tmp/c")
    info = SimpleNamespace(registered_model_version=3, model_uri="models:/m-1")
    return jobs._train_result(cfg, "run1", info, None, ev, {"best_val_log_loss": 0.3,  # type: ignore[arg-type]
                              "epochs_run": 2.0}, [{"best_epoch": 2}], [outcome])  # fmt: skip


# The command in a child process (its console is process-wide state): Ray and the training
# job stand in, the result comes from the job's own _train_result.
SCRIPT = """
import sys
from ray_app.core import runtime
from ray_app.training import jobs
from tests.unit.training.test_redaction import _result
runtime.ensure_ray = lambda _: "a fake Ray"
jobs.run_train_job = lambda cfg, *_, **__: _result(cfg)
from ray_app.cli.app import app
app(sys.argv[1:])
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_the_train_command_prints_no_password(tmp_path: Path, as_json: bool):
    args = ["train", "--tracking-uri", URI, *(["--json"] if as_json else [])]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr
    if as_json:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["mlflow_tracking_uri"] == "http://***@host:5000"
    else:
        assert "http://***@host:5000" in proc.stdout + proc.stderr


def test_config_show_masks_the_password(monkeypatch):
    from typer.testing import CliRunner

    from ray_app.cli.app import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0, shown.output
    assert SECRET not in shown.output and "tracking_uri: http://***@host:5000" in shown.output


def test_an_unreachable_registry_is_named_without_its_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(RegistryUnreachable) as caught:
        pin("models:/adult-income@champion", f"http://alice:{SECRET}@127.0.0.1:9")
    assert SECRET not in str(caught.value) and "***@127.0.0.1:9" in str(caught.value)


def test_mlflow_does_not_print_a_run_url_with_credentials(monkeypatch):
    monkeypatch.delenv(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name, raising=False)
    store.set_tracking(TrackingConfig(tracking_uri="http://mlflow:5000"))
    assert not MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get()
    store.set_tracking(TrackingConfig(tracking_uri=URI))
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get()
