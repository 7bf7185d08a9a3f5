"""`ray-app monitor`: drift and live performance of the served model on new rows, and the
retrain it triggers.

Rows (a file, folder, glob or URI of CSV / Parquet; the same reader and validation as batch
scoring) are binned against the model's training reference (`ray_app.ml.drift`): PSI per feature
and for the score. With labels (an `income` column), accuracy, log loss and ROC-AUC against
the model's own test figures. The report (JSON, a plot per drifted feature) goes to a folder
and to an MLflow run of the experiment `<experiment>-monitoring`. With `retrain`, drift or a
performance drop starts the training job (`ray-app train` here, or the train RayJob through the
launcher); the new version becomes champion only if it beats the champion on the same rows
(the promotion rule every training run applies).
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.errors import UserError
from ray_app.data.files import LABEL_COLUMN, list_files, read_for_scoring
from ray_app.ml.bundle import Scorer
from ray_app.ml.drift import FEATURES, THRESHOLD, bin_codes, drift_report, load_reference
from ray_app.ml.metrics import binary_metrics

# A live log loss this much above the model's own test log loss is a performance drop.
LOG_LOSS_TOLERANCE = 0.10


def read_rows(data: str) -> tuple[pd.DataFrame, list[str]]:
    """Valid rows of every file (label optional) and one message per invalid row."""
    frames, errors = [], []
    for path in list_files(data):
        frame, bad = read_for_scoring(path)
        frames.append(frame)
        errors += bad
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise UserError(f"{data}: no valid rows to monitor ({len(errors)} invalid)")
    return frame, errors


def check(data: str, bundle: Path, version: str, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Drift (and, with labels, performance) of `data` against the bundle's reference."""
    reference = load_reference(bundle)
    if reference is None:
        raise UserError(
            f"model version {version} has no monitoring reference (reference.json): it was "
            "trained before monitoring existed; train a new version"
        )
    frame, errors = read_rows(data)
    scorer = Scorer.from_bundle(bundle)
    x_cat, x_num = scorer.preprocessor.transform(frame)
    probability = scorer.predict_encoded(x_cat, x_num)
    codes = bin_codes(reference, x_cat, frame)
    report = drift_report(reference, codes, probability, threshold)
    report.update(data=data, model_version=version, bad_rows=len(errors))
    report["performance"] = None
    if LABEL_COLUMN in frame and frame[LABEL_COLUMN].notna().all():
        live = binary_metrics(frame[LABEL_COLUMN].to_numpy(), probability, prefix="")
        figures = reference["model_figures"]
        expected = figures.get("test_log_loss")
        dropped = expected is not None and live["log_loss"] > expected * (1 + LOG_LOSS_TOLERANCE)
        report["performance"] = {
            "live": {k: round(v, 4) for k, v in live.items()},
            "model_test": {k.removeprefix("test_"): round(v, 4) for k, v in figures.items()},
            "log_loss_tolerance": LOG_LOSS_TOLERANCE,
            "dropped": bool(dropped),
        }
    report["retrain_needed"] = report["drift"] or bool(
        report["performance"] and report["performance"]["dropped"]
    )
    # For the plots; not serialised.
    report["_rows"], report["_codes"], report["_reference"] = len(frame), codes, reference
    return report


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
        mlflow.log_artifacts(str(out), "monitoring")
        return str(run.info.run_id)


def retrain(tracking_uri: str, train_args: str, launch: dict[str, Any] | None,
            dry_run: bool) -> dict[str, Any]:  # fmt: skip
    """Start the training job: `ray-app train` here (a local Ray), or with `launch` the train
    job on a Ray head / the train RayJob (the pipeline's job step). Its own promotion rule
    decides whether the new version becomes champion."""
    argv = [*shlex.split(train_args), "--json", "--tracking-uri", tracking_uri]
    command = ["ray-app", "train", *argv]
    if dry_run:
        where = launch["backend"] if launch else "here"
        return {"started": False, "dry_run": True, "command": shlex.join(command), "on": where}
    if launch is not None:
        from ray_app.platform.pipeline import job_step

        result = job_step("train", launch, train_args)
    else:
        binary = str(Path(sys.executable).parent / "ray-app")
        proc = subprocess.run([binary, "train", *argv], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"retraining failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"started": True, "dry_run": False, "command": shlex.join(command),
            "model_version": result.get("model_version"),
            "champion": result.get("champion")}  # fmt: skip
