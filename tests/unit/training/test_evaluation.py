"""A candidate's figures from its scored rows: an ensemble is judged on its own validation
loss (the average of its members' probabilities), never on a member's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from ray_app.core.schema import LABEL_COLUMN
from ray_app.tracking.registry import better
from ray_app.training.evaluation import scored_figures


def _scored(y: np.ndarray, members: list[np.ndarray]) -> pd.DataFrame:
    """Rows as `scored_splits` returns them for an ensemble of len(members)."""
    frame = pd.DataFrame({LABEL_COLUMN: y, "sex": ["Male", "Female"] * (len(y) // 2),
                          "race": "White", "probability": np.mean(members, axis=0)})  # fmt: skip
    for i, prob in enumerate(members):
        frame[f"probability_member_{i}"] = prob
    return frame


def test_an_ensemble_is_promoted_on_its_own_validation_loss_not_a_members():
    """Regressions this catches: the champion rule given the best member's loss (member 0's
    here, 0.105), the first member's probabilities, or the members' mean loss, instead of the
    loss of the ensemble's averaged probabilities (0.39)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    sharp = np.where(y == 1, 0.9, 0.1)  # right and confident
    poor = np.clip(np.where(y == 1, 0.45, 0.55) + rng.normal(0, 0.05, len(y)), 0.01, 0.99)
    members: list[dict] = [{"seed": 1}, {"seed": 2}]
    figures = scored_figures(_scored(y, [sharp, poor]), _scored(y, [sharp, poor]), members)
    own = log_loss(y, (sharp + poor) / 2, labels=[0, 1])
    member_losses = [log_loss(y, p, labels=[0, 1]) for p in (sharp, poor)]
    assert figures.val_log_loss == pytest.approx(own, abs=1e-12)
    assert figures.val_log_loss == pytest.approx(0.39, abs=0.01)
    assert member_losses[0] == pytest.approx(0.105, abs=0.001)
    assert figures.val_log_loss not in (pytest.approx(v) for v in
                                        [*member_losses, np.mean(member_losses)])  # fmt: skip
    # A champion at 0.2 beats the ensemble (0.39), although member 0 alone (0.105) beats it.
    assert not better(figures.val_log_loss, 0.2)
    assert better(member_losses[0], 0.2)
    # Each member's own test figures are recorded beside the ensemble's.
    assert members[0]["log_loss"] == pytest.approx(member_losses[0])
    assert members[1]["log_loss"] == pytest.approx(member_losses[1])
    assert figures.report["metrics"]["test_log_loss"] == pytest.approx(own)
    assert figures.val_spread is not None and figures.val_spread.shape == (len(y),)


def test_one_model_has_no_member_figures_and_no_spread():
    y = np.array([0, 1] * 50)
    prob = np.where(y == 1, 0.8, 0.3)
    frame = _scored(y, [prob])[[LABEL_COLUMN, "sex", "race", "probability"]]
    figures = scored_figures(frame, frame, [])
    assert figures.val_spread is None
    assert figures.val_log_loss == pytest.approx(log_loss(y, prob))
