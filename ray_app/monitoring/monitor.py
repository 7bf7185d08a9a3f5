"""`ray-app monitor`: drift and live performance of the served model on new rows.

Rows (a file, folder, glob or URI of CSV / Parquet; the same reader and validation as batch
scoring) are binned against the model's training reference (`ray_app.ml.drift`): PSI per feature
and for the score. With labels (an `income` column), accuracy, log loss and ROC-AUC against
the model's own test figures. The report (JSON, a plot per drifted feature) goes to a folder
and to an MLflow run of the experiment `<experiment>-monitoring`. With `retrain`, drift or a
performance drop starts the training job (`ray_app.platform.retrain`); the new version becomes
champion only if it beats the champion on the same rows (the rule every training run applies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ray_app.core.config import MonitorConfig
from ray_app.core.errors import UserError
from ray_app.core.schema import LABEL_COLUMN
from ray_app.data.files import list_files, read_for_scoring
from ray_app.ml.drift import bin_codes, drift_report, load_reference
from ray_app.ml.metrics import binary_metrics
from ray_app.ml.scoring import Scorer


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


def check(data: str, bundle: Path, version: str, cfg: MonitorConfig) -> dict[str, Any]:
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
    report = drift_report(reference, codes, probability, cfg.psi_threshold)
    report.update(data=data, model_version=version, bad_rows=len(errors))
    report["performance"] = None
    if LABEL_COLUMN in frame and frame[LABEL_COLUMN].notna().all():
        live = binary_metrics(frame[LABEL_COLUMN].to_numpy(), probability, prefix="")
        figures = reference["model_figures"]
        expected = figures.get("test_log_loss")
        limit = None if expected is None else expected * (1 + cfg.log_loss_tolerance)
        dropped = limit is not None and live["log_loss"] > limit
        report["performance"] = {
            "live": {k: round(v, 4) for k, v in live.items()},
            "model_test": {k.removeprefix("test_"): round(v, 4) for k, v in figures.items()},
            "log_loss_tolerance": cfg.log_loss_tolerance,
            "dropped": bool(dropped),
        }
    report["retrain_needed"] = report["drift"] or bool(
        report["performance"] and report["performance"]["dropped"]
    )
    # For the plots; not serialised.
    report["_rows"], report["_codes"], report["_reference"] = len(frame), codes, reference
    return report
