"""The monitor's decisions on rows it has binned and scored: drift of the score alone, a
performance drop alone, and the retrain rule that either one triggers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from ray_app.core.config import FeatureConfig, MonitorConfig
from ray_app.data.stats import column_stats
from ray_app.ml.drift import bin_codes, build_reference, drift_report
from ray_app.ml.features import Preprocessor
from ray_app.monitoring.monitor import _finish, _performance, retrain_needed


@pytest.fixture(scope="module")
def setting(small_splits):
    """A reference from the training split, validation scores ~ Beta(1, 3); the validation
    rows binned (no feature drift against their own training data)."""
    stats = column_stats(small_splits.train)
    pre = Preprocessor.fit_stats(stats, FeatureConfig())
    scores = np.random.default_rng(0).beta(1, 3, len(small_splits.val))
    reference = build_reference(stats, pre, scores, {"test_log_loss": 0.45})
    x_cat, _ = pre.transform(small_splits.val)
    return reference, bin_codes(reference, x_cat, small_splits.val), scores


def test_a_shift_of_the_scores_alone_is_drift(setting):
    """Regression this catches: `drift` decided by the features only (the score PSI computed
    and printed but never compared), or the score PSI computed against the wrong fractions."""
    reference, codes, _ = setting
    same = drift_report(reference, codes, np.random.default_rng(1).beta(1, 3, len(codes)), 0.2)
    assert same["drift"] is False and same["score_psi"] < 0.05, same["score_psi"]
    # The features unchanged, the model now answers ~0.7 for everybody.
    shifted = drift_report(reference, codes, np.random.default_rng(1).beta(7, 3, len(codes)), 0.2)
    assert shifted["drifted_features"] == []
    assert shifted["score_psi"] > 1.0 and shifted["drift"] is True
    assert max(shifted["feature_psi"].values()) < 0.2  # no feature past the threshold


def test_a_performance_drop_without_drift_asks_for_a_retrain(setting):
    """Regressions this catches: the retrain rule reading drift only (`retrain_needed =
    drift`), the tolerance ignored (any loss above the test figure a drop), or `>=` / `<`
    turned round at the limit (test log loss x (1 + tolerance))."""
    reference, codes, scores = setting
    rng = np.random.default_rng(2)
    y = (rng.random(len(scores)) < scores).astype(int)  # labels the scores describe
    flipped = 1 - y  # the world changed: same rows, same scores, the opposite answers
    live = log_loss(flipped, scores, labels=[0, 1])
    cfg = MonitorConfig(log_loss_tolerance=0.10)
    report = drift_report(reference, codes, scores, cfg.psi_threshold)
    assert report["drift"] is False
    performance = _performance(flipped, scores, reference, cfg)
    assert performance["live"]["log_loss"] == pytest.approx(live, abs=1e-4)
    assert live > 0.45 * 1.1 and performance["dropped"] is True
    report["performance"] = performance
    assert _finish(report, len(codes), codes, reference)["retrain_needed"] is True
    # The labels the scores describe: no drop, no drift, no retrain.
    calm = _performance(y, scores, reference, cfg)
    assert calm["live"]["log_loss"] < 0.45 * 1.1 and calm["dropped"] is False
    assert retrain_needed(False, calm) is False and retrain_needed(False, None) is False
    assert retrain_needed(True, calm) is True
    # At the limit: a live loss 1 % under test x 1.1 is not a drop, 1 % over is.
    for factor, dropped in ((1.01, False), (0.99, True)):
        ref = {**reference, "model_figures": {"test_log_loss": live / 1.1 * factor}}
        assert _performance(flipped, scores, ref, cfg)["dropped"] is dropped
    # No tolerance: any loss above the test figure is a drop.
    ref = {**reference, "model_figures": {"test_log_loss": live * 0.999}}
    assert _performance(flipped, scores, ref, MonitorConfig(log_loss_tolerance=0.0))["dropped"]
