"""Ray Train tests on a real local Ray with a real MLflow sqlite store in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.ml.scoring import Scorer
from ray_app.training.jobs import run_train_job

pytestmark = pytest.mark.slow


def test_two_workers_checkpoint_report_log_and_register(local_ray, quick_cfg, small_splits):
    result = run_train_job(quick_cfg).to_json()

    checkpoint = Path(result["checkpoint"])
    assert (checkpoint / "model.pt").exists() and (checkpoint / "train_meta.json").exists()
    assert result["epochs_run"] == 2
    # Better than always answering '<=50K' by a margin (2 epochs on 2,400 rows reach ~0.84).
    majority = 1 - float(small_splits.test["income"].mean())
    assert result["test_accuracy"] >= majority + 0.04
    assert 0.25 < result["test_log_loss"] < 0.45  # the majority rate's log loss is 0.55

    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["ray.num_workers"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_log_loss")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert run.data.metrics["gbdt_test_accuracy"] == pytest.approx(result["gbdt_test_accuracy"])
    assert result["gbdt_test_accuracy"] >= majority + 0.04
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
    # A worse model's version not taking the alias: tests/integration/tracking/test_promotion.py
    # (the rule) and the pipeline's second run in tests/e2e/test_kube_payloads.py (end to end).


def test_worker_death_resumes_from_last_checkpoint(local_ray, quick_cfg, small_splits, monkeypatch):
    """A worker hard-exits after training epoch 2 (before reporting it): the new worker group
    must start from epoch 1's checkpoint, weights and optimizer state, not from scratch."""
    import math

    from ray_app.training.loop import read_checkpoint

    quick_cfg.train.max_epochs = 3
    monkeypatch.setenv("RAY_APP_EPOCH_HOOK", "tests.support.faults:last_worker_at_epoch_2")
    quick_cfg.ray.max_failures = 1
    quick_cfg.tracking.register_model = False
    result = run_train_job(quick_cfg).to_json()

    run_dir = Path(result["checkpoint"]).parent
    marker = run_dir / "fault_injected.txt"
    assert marker.exists(), "the injected worker failure did not happen"
    failed_at = marker.stat().st_mtime
    assert result["epochs_run"] == 3
    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    steps = [m.step for m in client.get_metric_history(result["mlflow_run_id"], "val_log_loss")]
    assert steps == [1, 2, 3]
    # Epoch 1's record is the one computed before the crash, carried in the checkpoint...
    latest = max((read_checkpoint(p) for p in run_dir.glob("checkpoint_*") if p.is_dir()),
                 key=lambda c: c["meta"]["epoch"])  # fmt: skip
    ends = [row["epoch_end_unix"] for row in latest["meta"]["history"]]
    assert ends[0] < failed_at < ends[1] < ends[2]
    # ...and AdamW's step count spans all three epochs: its state was restored, not reset.
    rows_per_worker = len(small_splits.train) // quick_cfg.ray.num_workers
    per_epoch = math.ceil(rows_per_worker / (quick_cfg.train.batch_size // 2))
    adam_steps = {int(s["step"]) for s in latest["optimizer"]["state"].values()}
    assert adam_steps == {3 * per_epoch}
    assert result["model_version"] is None


def test_an_ensemble_member_that_dies_resumes_from_its_checkpoint(
    local_ray, quick_cfg, monkeypatch
):
    """An ensemble of 2 (Tune trials); member seed 1 hard-exits in epoch 3: Tune restarts it
    from a checkpoint, not from scratch (its first epochs predate the crash), and the one
    registered version holds both members."""
    from ray_app.training.loop import read_checkpoint

    quick_cfg.train.ensemble = 2
    quick_cfg.train.max_epochs = 3
    monkeypatch.setenv("RAY_APP_EPOCH_HOOK", "tests.support.faults:member_seed_1_at_epoch_3")
    quick_cfg.ray.max_failures = 1
    result = run_train_job(quick_cfg).to_json()

    run_dir = Path(result["checkpoint"]).parents[1]  # <run>/<member trial>/checkpoint_*
    marker = run_dir / "fault_injected.txt"
    assert marker.exists(), "the injected member failure did not happen"
    failed_at = marker.stat().st_mtime
    assert [m["seed"] for m in result["members"]] == [0, 1]
    assert [m["epochs_run"] for m in result["members"]] == [3, 3]
    saved = [read_checkpoint(p) for p in run_dir.glob("*seed=1*/checkpoint_*") if p.is_dir()]
    latest = max(saved, key=lambda c: c["meta"]["epoch"])
    assert latest["meta"]["epoch"] == 3
    ends = [row["epoch_end_unix"] for row in latest["meta"]["history"]]
    assert [row["epoch"] for row in latest["meta"]["history"]] == [1, 2, 3]
    assert ends[0] < failed_at < ends[2]
    assert result["model_version"] == 1 and result["ensemble_members"] == 2


def test_failed_training_marks_the_mlflow_run_failed(local_ray, quick_cfg, monkeypatch):
    monkeypatch.setenv("RAY_APP_EPOCH_HOOK", "tests.support.faults:last_worker_at_epoch_1")
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

    from ray_app.data.files import read_uci
    from tests.support.samples import DATA, KAGGLE, write_layout

    both = pd.concat([read_uci(DATA / "adult.data"), read_uci(DATA / "adult.test")])
    csv = write_layout(both, tmp_path / "adult.csv", KAGGLE)
    quick_cfg.data.train_path = csv
    # The layout is the claim, not the quality of a full run (benchmarks/train_bench.py's):
    # the test split is taken from all 48,842 rows first, then 6,000 of the rest are trained on.
    quick_cfg.data.subsample = 6000
    quick_cfg.train.max_epochs = 3
    result = run_train_job(quick_cfg).to_json()
    assert result["test_accuracy"] >= 0.82  # learned: the majority class alone is 0.76
    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["data.layout"] == "kaggle"
    assert run.data.tags["data.test_source"].startswith(f"split of {csv}")
    assert json.loads(run.data.tags["data.renamed_columns"]) == {
        "educational-num": "education_num", "gender": "sex"
    }  # fmt: skip
    rows = json.loads(run.data.tags["data.rows"])
    assert rows["test"] == math.ceil(0.2 * 48_842) and rows["train"] + rows["val"] == 6000
    promotion = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluation/promotion.json")
    assert promotion["promoted"] is True and promotion["reason"] == "no champion yet"
