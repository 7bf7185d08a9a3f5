"""The monitor's report: report.json, a plot per drifted feature, and an MLflow run."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ray_app.ml.drift import FEATURES


def write_report(report: dict[str, Any], out: Path) -> Path:
    """report.json and one plot per drifted feature (training vs monitored fractions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    reference, codes = report["_reference"], report["_codes"]
    for feature in report["drifted_features"]:
        spec = reference["features"][feature]
        expected = np.asarray(spec["fractions"])
        j = FEATURES.index(feature)
        counts = np.bincount(codes[:, j].astype(np.int64), minlength=len(expected))
        actual = counts[: len(expected)] / max(counts.sum(), 1)
        labels = spec["bins"] if spec["kind"] == "categorical" else _edge_labels(spec["edges"])
        fig, ax = plt.subplots(figsize=(8, 4))
        x = np.arange(len(expected))
        ax.bar(x - 0.2, expected, 0.4, label="training")
        ax.bar(x + 0.2, actual, 0.4, label=f"monitored ({report['_rows']} rows)")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{feature}: PSI {report['feature_psi'][feature]:.3f}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"drift_{feature}.png", dpi=90)
        plt.close(fig)
    path = out / "report.json"
    path.write_text(json.dumps(public(report), indent=1))
    return path


def _edge_labels(edges: list[float]) -> list[str]:
    bounds = [-np.inf, *edges, np.inf]
    return [f"[{a:g}, {b:g})" for a, b in itertools.pairwise(bounds)]


def public(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its in-memory helpers (what is printed and logged)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def log_to_mlflow(report: dict[str, Any], out: Path, experiment: str) -> str:
    """One MLflow run per check, in `<experiment>-monitoring`: PSI metrics, flags, the report."""
    import mlflow

    mlflow.set_experiment(f"{experiment}-monitoring")
    with mlflow.start_run(run_name=f"monitor-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tags({"model_version": report["model_version"], "data": report["data"],
                         "drift": str(report["drift"]).lower()})  # fmt: skip
        mlflow.log_metrics({f"psi_{k}": v for k, v in report["feature_psi"].items()})
        mlflow.log_metrics({"score_psi": report["score_psi"], "rows": report["rows"],
                            "drift": float(report["drift"])})  # fmt: skip
        if report["performance"]:
            mlflow.log_metrics({f"live_{k}": v for k, v in report["performance"]["live"].items()})
        if report.get("uncertainty"):
            mlflow.log_metrics({"mean_spread": report["uncertainty"]["mean_spread"]})
        mlflow.log_artifacts(str(out), "monitoring")
        return str(run.info.run_id)
