"""The evaluation plots every training run logs: ROC, precision-recall, calibration and the
confusion matrix at the decision threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from ray_app.core.schema import LABELS, THRESHOLD, predicted


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
    matrix = confusion_matrix(y, predicted(prob), labels=[0, 1])
    ax4.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax4.text(j, i, str(count), ha="center", va="center")
    ax4.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=list(LABELS),
        yticklabels=list(LABELS),
        xlabel="predicted",
        ylabel="actual",
        title=f"Confusion matrix (threshold {THRESHOLD})",
    )
    paths.append(directory / "confusion_matrix.png")

    for figure, path in zip((fig, fig2, fig3, fig4), paths, strict=True):
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        plt.close(figure)
    return paths
