"""Metrics on the official test split, fairness slices, plots, and a GBDT reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from ray_app.data.files import CATEGORICAL_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMNS, Splits
from ray_app.ml.features import Preprocessor

SLICE_COLUMNS = ("sex", "race")


def binary_metrics(y: np.ndarray, prob: np.ndarray, prefix: str = "test_") -> dict[str, float]:
    """Accuracy, F1 (>50K positive), macro F1, log loss, ROC-AUC, Brier at threshold 0.5."""
    y = np.asarray(y).astype(int)
    prob = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    pred = (prob >= 0.5).astype(int)
    return {
        f"{prefix}accuracy": float(accuracy_score(y, pred)),
        f"{prefix}f1": float(f1_score(y, pred, zero_division=0)),
        f"{prefix}macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        f"{prefix}log_loss": float(log_loss(y, prob, labels=[0, 1])),
        f"{prefix}roc_auc": float(roc_auc_score(y, prob)) if len(set(y)) > 1 else float("nan"),
        f"{prefix}brier": float(brier_score_loss(y, prob)),
    }


def slice_report(frame: pd.DataFrame, prob: np.ndarray) -> dict[str, Any]:
    """Per-group metrics for sex and race, and the demographic parity difference of each."""
    y = frame[LABEL_COLUMN].to_numpy().astype(int)
    pred = (np.asarray(prob) >= 0.5).astype(int)
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


def write_plots(y: np.ndarray, prob: np.ndarray, directory: Path) -> list[Path]:
    """ROC, precision-recall, calibration and confusion-matrix PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    fpr, tpr, _ = roc_curve(y, prob)
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, prob):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    paths.append(directory / "roc.png")

    fig2, ax2 = plt.subplots(figsize=(4.5, 4.5))
    precision, recall, _ = precision_recall_curve(y, prob)
    ax2.plot(recall, precision)
    ax2.axhline(float(np.mean(y)), ls="--", color="grey", label="base rate")
    ax2.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax2.legend(loc="lower left")
    paths.append(directory / "precision_recall.png")

    fig3, ax3 = plt.subplots(figsize=(4.5, 4.5))
    frac_pos, mean_pred = calibration_curve(y, prob, n_bins=15, strategy="quantile")
    ax3.plot(mean_pred, frac_pos, "o-", label="model")
    ax3.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax3.set(xlabel="mean predicted P(>50K)", ylabel="observed fraction >50K", title="Calibration")
    ax3.legend(loc="upper left")
    paths.append(directory / "calibration.png")

    fig4, ax4 = plt.subplots(figsize=(4.5, 4))
    matrix = confusion_matrix(y, (prob >= 0.5).astype(int), labels=[0, 1])
    ax4.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax4.text(j, i, str(count), ha="center", va="center")
    ax4.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["<=50K", ">50K"],
        yticklabels=["<=50K", ">50K"],
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix (threshold 0.5)",
    )
    paths.append(directory / "confusion_matrix.png")

    for figure, path in zip((fig, fig2, fig3, fig4), paths, strict=True):
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        plt.close(figure)
    return paths


def evaluate_predictions(test: pd.DataFrame, prob: np.ndarray) -> dict[str, Any]:
    """All test metrics + slices for one model's probabilities."""
    y = test[LABEL_COLUMN].to_numpy()
    return {"metrics": binary_metrics(y, prob), "slices": slice_report(test, prob)}
