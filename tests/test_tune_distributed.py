"""Distributed Tune trials (--workers-per-trial): a TorchTrainer inside each trial."""

from __future__ import annotations

import os

import pytest

from ray_app.tune import run_tune_job

# Hung in 2 of 4 runs here (a Train worker group never started inside the Tune trial; cause
# not found yet), so it stays out of CI until fixed: RAY_APP_RUN_FLAKY=1 runs it.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("RAY_APP_RUN_FLAKY") != "1", reason="intermittent hang; see docstring"
    ),
]


@pytest.fixture(scope="module")
def roomy_ray():
    """Logical CPUs to spare: a trial holds its coordinator and its Train worker group, and a
    worker-group start that Ray Train retries under load can hold a second reservation for a
    while (seen once here as a hang with exactly 2 CPUs)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.timeout(300)
def test_distributed_trials_report_through_ray_train(roomy_ray, quick_cfg):
    quick_cfg.search.num_samples = 2
    quick_cfg.search.max_concurrent = 1
    quick_cfg.search.max_epochs = 2
    quick_cfg.search.workers_per_trial = 1
    quick_cfg.search.retrain = False
    result = run_tune_job(quick_cfg)
    assert result["trials"] == 2 and result["errored"] == 0
    assert result["epochs_consumed"] == 4  # both trials reported both epochs to Tune
