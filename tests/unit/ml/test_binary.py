"""The numpy F1 / ROC-AUC the training loop reports equal scikit-learn's (ties, imbalance,
degenerate predictions), and importing the loop does not import scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ray_app.ml.binary import f1, roc_auc


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_scikit_learn_on_random_scores_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    y[:2] = [True, False]  # both classes
    # Rounded scores: many ties, inside and across the classes.
    score = np.round(rng.random(n) * 0.6 + 0.4 * y, int(rng.integers(1, 3)))
    pred = score >= 0.5
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert f1(y, pred) == pytest.approx(f1_score(y, pred, zero_division=0), abs=1e-12)


def test_degenerate_cases():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.5)) == 0.5  # all tied: chance
    assert f1(np.zeros(4), np.zeros(4)) == f1_score(np.zeros(4), np.zeros(4), zero_division=0)
    assert f1(y, np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3]))


def test_a_train_worker_does_not_import_scikit_learn():
    """What a Ray Train worker imports (the module its train function lives in) leaves
    scikit-learn out: ~1 s of CPU per worker process at start."""
    code = ("import sys, ray_app.training.distributed; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "[]"
