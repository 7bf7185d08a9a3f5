"""Ray Train tests on a real local Ray with a real MLflow sqlite store in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ray_app.artifacts import Scorer
from ray_app.data import FEATURE_COLUMNS
from ray_app.jobs import run_train_job

pytestmark = pytest.mark.slow


def test_two_workers_checkpoint_report_log_and_register(local_ray, quick_cfg, small_splits):
    result = run_train_job(quick_cfg)

    checkpoint = Path(result["checkpoint"])
    assert (checkpoint / "model.pt").exists() and (checkpoint / "train_meta.json").exists()
    assert result["epochs_run"] == 2
    assert 0.5 < result["test_accuracy"] <= 1.0 and result["test_log_loss"] > 0

    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["ray.num_workers"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_log_loss")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert "gbdt_test_accuracy" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/roc.png",
        "evaluation/calibration.png",
        "evaluation/report.json",
    } <= artifacts
    assert client.list_artifacts(run.info.run_id, "preprocessor")[0].path.endswith(".json")

    assert result["model_version"] == 1 and result["champion"]["promoted"] is True
    champion = client.get_model_version_by_alias("adult-income", "champion")
    assert str(champion.version) == "1"

    # The logged model scores raw rows (preprocessing inside) exactly like the bundle does.
    mlflow.set_tracking_uri(quick_cfg.tracking.tracking_uri)
    logged = mlflow.pyfunc.load_model("models:/adult-income@champion")
    rows = small_splits.test[FEATURE_COLUMNS].head(200)
    predicted = logged.predict(rows)
    bundle_dir = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="bundle")
    np.testing.assert_allclose(
        predicted["probability"].to_numpy(),
        Scorer.from_bundle(Path(bundle_dir)).predict_proba(rows),
    )
    assert set(predicted["label"]) <= {"<=50K", ">50K"}

    # A worse model (one epoch) gets a new version but does not take the champion alias.
    quick_cfg.train.max_epochs = 1
    quick_cfg.train.lr = 1e-5
    worse = run_train_job(quick_cfg)
    assert worse["model_version"] == 2 and worse["champion"]["promoted"] is False
    assert str(client.get_model_version_by_alias("adult-income", "champion").version) == "1"


def test_worker_death_resumes_from_last_checkpoint(local_ray, quick_cfg):
    quick_cfg.train.max_epochs = 3
    quick_cfg.train.fail_once_at_epoch = 2
    quick_cfg.ray.max_failures = 1
    quick_cfg.tracking.register_model = False
    result = run_train_job(quick_cfg)

    run_dir = Path(result["checkpoint"]).parent
    marker = run_dir / "fault_injected.txt"
    assert marker.exists(), "the injected worker failure did not happen"
    assert result["epochs_run"] == 3
    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    steps = [m.step for m in client.get_metric_history(result["mlflow_run_id"], "val_log_loss")]
    assert steps == [1, 2, 3]  # epoch 1 restored from the checkpoint, not trained twice
    assert result["model_version"] is None


def test_failed_training_marks_the_mlflow_run_failed(local_ray, quick_cfg):
    quick_cfg.train.fail_once_at_epoch = 1
    quick_cfg.ray.max_failures = 0
    with pytest.raises(RuntimeError, match="failed"):
        run_train_job(quick_cfg)
    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(quick_cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_seeds_one_file_layout_trains_end_to_end(local_ray, quick_cfg, tmp_path):
    """Kaggle's adult.csv (the UCI train and test rows together, 48,842): split into train /
    validation / test, scored on its own held-out rows, the layout logged with the run."""
    import math

    import pandas as pd

    from ray_app.data import read_uci

    from .test_data import DATA, KAGGLE, write_layout

    both = pd.concat([read_uci(DATA / "adult.data"), read_uci(DATA / "adult.test")])
    csv = write_layout(both, tmp_path / "adult.csv", KAGGLE)
    quick_cfg.data.train_path = csv
    quick_cfg.data.subsample = None
    quick_cfg.train.max_epochs = 4
    result = run_train_job(quick_cfg)
    assert result["test_accuracy"] >= 0.85
    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["data.layout"] == "kaggle"
    assert run.data.tags["data.test_source"].startswith(f"split of {csv}")
    assert json.loads(run.data.tags["data.renamed_columns"]) == {
        "educational-num": "education_num", "gender": "sex"
    }  # fmt: skip
    rows = json.loads(run.data.tags["data.rows"])
    assert rows["test"] == math.ceil(0.2 * 48_842) and sum(rows.values()) == 48_842
    promotion = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluation/promotion.json")
    assert promotion["promoted"] is True and promotion["reason"] == "no champion yet"
