"""A small real ASHA search on a local Ray: finishes, stops trials early, logs MLflow runs."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ray_app.tune import run_tune_job

pytestmark = pytest.mark.slow


def test_small_asha_search_stops_trials_early_and_logs_nested_runs(local_ray, quick_cfg):
    quick_cfg.search.num_samples = 8
    quick_cfg.search.max_epochs = 6
    quick_cfg.search.grace_period = 1
    quick_cfg.search.reduction_factor = 2
    quick_cfg.search.retrain = False
    quick_cfg.search.name = "small-search"
    result = run_tune_job(quick_cfg)

    assert result["trials"] == 8 and result["errored"] == 0
    assert result["stopped_early"] >= 1
    assert result["epochs_consumed"] < result["full_budget_epochs"] == 8 * 6
    assert 0 < result["best_val_log_loss"] < 1

    client = MlflowClient(quick_cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(quick_cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parent = result["mlflow_parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 8
    assert all("val_log_loss" in r.data.metrics for r in children)
    assert client.get_run(parent).data.metrics["best_val_log_loss"] == pytest.approx(
        result["best_val_log_loss"]
    )

    # --resume on a finished search restores it (no new trials) under the same parent run.
    quick_cfg.search.resume = True
    again = run_tune_job(quick_cfg)
    assert again["mlflow_parent_run_id"] == parent and again["trials"] == 8
