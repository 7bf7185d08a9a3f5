"""The label-free uncertainty signal: the reference records the validation spread; the
monitor compares the rows' mean spread with it."""

from __future__ import annotations

import numpy as np
import pytest

from ray_app.core.config import FeatureConfig, MonitorConfig
from ray_app.data.stats import column_stats
from ray_app.ml.drift import build_reference
from ray_app.ml.features import Preprocessor
from ray_app.monitoring.monitor import _uncertainty


@pytest.fixture(scope="module")
def parts(small_splits):
    stats = column_stats(small_splits.train)
    return stats, Preprocessor.fit_stats(stats, FeatureConfig())


def test_the_reference_keeps_the_validation_spread_of_an_ensemble_only(parts):
    stats, pre = parts
    scores = np.linspace(0.01, 0.99, 200)
    single = build_reference(stats, pre, scores, {})
    assert "spread" not in single and _uncertainty(np.full(5, 0.1), single, MonitorConfig()) is None
    spreads = np.r_[np.full(100, 0.02), np.full(100, 0.06)]
    ensemble = build_reference(stats, pre, scores, {}, spreads)
    assert ensemble["spread"] == {"mean": pytest.approx(0.04), "rows": 200}


def test_the_warning_rises_only_past_the_ratio(parts):
    stats, pre = parts
    reference = build_reference(stats, pre, np.linspace(0.01, 0.99, 200), {}, np.full(200, 0.04))
    cfg = MonitorConfig(spread_ratio=1.5)
    calm = _uncertainty(np.full(50, 0.059), reference, cfg)
    assert calm is not None and calm["ratio"] == pytest.approx(1.475) and calm["rose"] is False
    raised = _uncertainty(np.full(50, 0.061), reference, cfg)
    assert raised is not None and raised["rose"] is True
    assert raised["mean_spread"] == pytest.approx(0.061)
    assert raised["validation_mean_spread"] == pytest.approx(0.04)
