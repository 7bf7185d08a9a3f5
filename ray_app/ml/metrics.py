"""Metrics of one model's probabilities on a split, fairness slices, and a GBDT reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
)

from ray_app.core.schema import CATEGORICAL_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMNS, predicted
from ray_app.data.splits import Splits
from ray_app.ml.binary import f1, roc_auc
from ray_app.ml.features import Preprocessor

SLICE_COLUMNS = ("sex", "race")


def binary_metrics(y: np.ndarray, prob: np.ndarray, prefix: str = "test_") -> dict[str, float]:
    """Accuracy, F1 (>50K positive), macro F1, log loss, ROC-AUC, Brier at the threshold."""
    y = np.asarray(y).astype(int)
    prob = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    pred = predicted(prob)
    return {
        f"{prefix}accuracy": float(accuracy_score(y, pred)),
        f"{prefix}f1": f1(y, pred),
        f"{prefix}macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        f"{prefix}log_loss": float(log_loss(y, prob, labels=[0, 1])),
        f"{prefix}roc_auc": roc_auc(y, prob) if len(set(y)) > 1 else float("nan"),
        f"{prefix}brier": float(brier_score_loss(y, prob)),
    }


def slice_report(frame: pd.DataFrame, prob: np.ndarray) -> dict[str, Any]:
    """Per-group metrics for sex and race, and the demographic parity difference of each."""
    y = frame[LABEL_COLUMN].to_numpy().astype(int)
    pred = predicted(prob)
    report: dict[str, Any] = {}
    for column in SLICE_COLUMNS:
        groups = {}
        for value, index in frame.groupby(frame[column].fillna("<missing>")).groups.items():
            rows = frame.index.get_indexer(index)
            groups[str(value)] = {
                "rows": len(rows),
                "accuracy": float((pred[rows] == y[rows]).mean()),
                "positive_rate": float(pred[rows].mean()),
                "base_rate": float(y[rows].mean()),
            }
        rates = [g["positive_rate"] for g in groups.values()]
        report[column] = {
            "groups": groups,
            "demographic_parity_difference": float(max(rates) - min(rates)),
        }
    return report


def gbdt_reference(splits: Splits, pre: Preprocessor, seed: int = 0) -> dict[str, float]:
    """HistGradientBoosting on the same train split (native categoricals), scored on test."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # ~1 s to import: only here

    def encode(frame: pd.DataFrame) -> np.ndarray:
        x_cat, _ = pre.transform(frame)
        return np.hstack([x_cat.astype(np.float64), frame[NUMERIC_COLUMNS].to_numpy(np.float64)])

    n_cat = len(CATEGORICAL_COLUMNS)
    model = HistGradientBoostingClassifier(
        categorical_features=list(range(n_cat)),
        max_iter=500,
        learning_rate=0.05,
        early_stopping=True,
        validation_fraction=None,  # early stopping on the project's validation split (fit below)
        random_state=seed,
    )
    x_train, y_train = encode(splits.train), splits.train[LABEL_COLUMN].to_numpy()
    x_val, y_val = encode(splits.val), splits.val[LABEL_COLUMN].to_numpy()
    model.fit(x_train, y_train, X_val=x_val, y_val=y_val)
    prob = model.predict_proba(encode(splits.test))[:, 1]
    return binary_metrics(splits.test[LABEL_COLUMN].to_numpy(), prob, prefix="gbdt_test_")


def evaluate_predictions(test: pd.DataFrame, prob: np.ndarray) -> dict[str, Any]:
    """All test metrics + slices for one model's probabilities."""
    y = test[LABEL_COLUMN].to_numpy()
    return {"metrics": binary_metrics(y, prob), "slices": slice_report(test, prob)}
