"""F1 and ROC-AUC of a binary classifier in plain numpy.

The training loop reports them every epoch in every Ray Train worker; importing
scikit-learn's metrics there cost each worker process ~1 s of CPU at start (2-core box), paid
again by every run, trial and restarted group. `ray_app.ml.metrics` uses the same two
functions, so a run's per-epoch and final figures share one definition (checked against
scikit-learn's in tests/unit/ml/test_binary.py).
"""

from __future__ import annotations

import numpy as np


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    """F1 of the positive class (1): 2TP / (2TP + FP + FN); 0.0 when there is no positive
    label and no positive prediction (scikit-learn's zero_division=0)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    tp = int(np.count_nonzero(y & pred))
    wrong = int(np.count_nonzero(y ^ pred))  # FP + FN
    return 0.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative,
    ties counting one half (Mann-Whitney U over average ranks).

    Raises:
        ValueError: `y` holds one class only (the area is undefined).
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64).ravel()
    positives = int(np.count_nonzero(y))
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC-AUC needs both classes in y")
    # Average rank (1-based) of each distinct score: tied scores share the mean of their ranks.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    rank_sum = float(mean_rank[inverse[y]].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
