"""`ray-app monitor`: drift and live performance of the served model on new rows.

Either the serving graph's prediction log (`--data <log root> [--since 24h]`, read through
Ray Data; each model version's rows against that version's own reference; labels from
/feedback and `--labels` joined by request id) or a file of rows:

Rows (a file, folder, glob or URI of CSV / Parquet; the same reader and validation as batch
scoring) are binned against the model's training reference (`ray_app.ml.drift`): PSI per feature
and for the score. With labels (an `income` column), accuracy, log loss and ROC-AUC against
the model's own test figures. The report (JSON, a plot per drifted feature) goes to a folder
and to an MLflow run of the experiment `<experiment>-monitoring`. With `retrain`, drift or a
performance drop starts the training job (`ray_app.platform.retrain`); the new version becomes
champion only if it beats the champion on the same rows (the rule every training run applies).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.config import MonitorConfig, RayConfig
from ray_app.core.errors import UserError
from ray_app.core.schema import FEATURE_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMNS, POSITIVE_LABEL
from ray_app.data import predlog
from ray_app.data.files import filesystem, list_files, read_for_scoring
from ray_app.ml.bundle import PREPROCESSOR
from ray_app.ml.drift import FEATURES, bin_codes, drift_report, load_reference
from ray_app.ml.features import Preprocessor
from ray_app.ml.metrics import binary_metrics
from ray_app.ml.scoring import Scorer, average, spread


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


def _reference(bundle: Path, version: str) -> dict[str, Any]:
    reference = load_reference(bundle)
    if reference is None:
        raise UserError(
            f"model version {version} has no monitoring reference (reference.json): it was "
            "trained before monitoring existed; train a new version"
        )
    return reference


def _performance(y: np.ndarray, probability: np.ndarray, reference: dict[str, Any],
                 cfg: MonitorConfig) -> dict[str, Any]:  # fmt: skip
    """Live figures of labelled rows against the model's own test figures."""
    live = binary_metrics(y, probability, prefix="")
    figures = reference["model_figures"]
    expected = figures.get("test_log_loss")
    limit = None if expected is None else expected * (1 + cfg.log_loss_tolerance)
    return {
        "labelled_rows": len(y),
        "live": {k: round(v, 4) for k, v in live.items()},
        "model_test": {k.removeprefix("test_"): round(v, 4) for k, v in figures.items()},
        "log_loss_tolerance": cfg.log_loss_tolerance,
        "dropped": bool(limit is not None and live["log_loss"] > limit),
    }


def _uncertainty(spreads: np.ndarray, reference: dict[str, Any],
                 cfg: MonitorConfig) -> dict[str, Any] | None:  # fmt: skip
    """Label-free: a deep ensemble's mean spread on these rows against its mean spread on the
    validation rows (members disagree more on rows unlike the training data). None for one
    model, or a reference from before the spread was recorded."""
    expected = reference.get("spread")
    if expected is None or not len(spreads):
        return None
    live = float(spreads.mean())
    ratio = live / expected["mean"] if expected["mean"] > 0 else float("inf")
    return {"mean_spread": round(live, 4), "validation_mean_spread": round(expected["mean"], 4),
            "ratio": round(ratio, 3), "spread_ratio": cfg.spread_ratio,
            "rose": ratio > cfg.spread_ratio}  # fmt: skip


def check(data: str, bundle: Path, version: str, cfg: MonitorConfig) -> dict[str, Any]:
    """Drift (and, with labels, performance) of `data` against the bundle's reference; for
    a deep ensemble, the members' spread against the validation spread."""
    reference = _reference(bundle, version)
    frame, errors = read_rows(data)
    scorer = Scorer.from_bundle(bundle)
    x_cat, x_num = scorer.preprocessor.transform(frame)
    members = scorer.predict_members(x_cat, x_num)
    probability = average(members)
    codes = bin_codes(reference, x_cat, frame)
    report = drift_report(reference, codes, probability, cfg.psi_threshold)
    report.update(data=data, model_version=version, bad_rows=len(errors))
    report["uncertainty"] = _uncertainty(spread(members), reference, cfg)
    report["performance"] = None
    if LABEL_COLUMN in frame and frame[LABEL_COLUMN].notna().all():
        report["performance"] = _performance(frame[LABEL_COLUMN].to_numpy(), probability,
                                             reference, cfg)  # fmt: skip
    return _finish(report, len(frame), codes, reference)


def retrain_needed(drift: bool, performance: dict[str, Any] | None) -> bool:
    """The retrain rule: drift (a feature's or the score's PSI past the threshold), OR a
    performance drop on labelled rows, each enough on its own."""
    return bool(drift) or bool(performance and performance["dropped"])


def _finish(report: dict[str, Any], rows: int, codes: np.ndarray,
            reference: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    report["retrain_needed"] = retrain_needed(report["drift"], report["performance"])
    # For the plots; not serialised.
    report["_rows"], report["_codes"], report["_reference"] = rows, codes, reference
    return report


# -- the prediction log ----------------------------------------------------------------------
def _read_parquet(paths: list[str], ray_cfg: RayConfig) -> pd.DataFrame:
    """Any number of Parquet files, read in parallel by Ray Data (a cluster or a local Ray)."""
    import ray

    from ray_app.core.runtime import ensure_ray

    ensure_ray(ray_cfg)
    # partitioning=None: the date is in the rows' own `time`, not taken from the path.
    frame: pd.DataFrame = ray.data.read_parquet(paths, partitioning=None).to_pandas()
    return frame


def read_labels(source: str) -> pd.DataFrame:
    """A CSV or Parquet file (folder, glob, URI) of `request_id,income`, checked row by row."""
    frames = []
    for path in list_files(source):
        if path.lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            fs, inner = filesystem(path)
            frame = pq.read_table(inner, filesystem=fs).to_pandas()
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frames.append(predlog.check_labels(frame, path))
    return pd.concat(frames, ignore_index=True)


def read_log(root: str, since: timedelta | datetime | None, labels: str | None,
             ray_cfg: RayConfig, now: datetime | None = None,
             ) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """The log's records of the window (all of it without `since`) with an `income` column
    where a label arrived (the label log's, then `labels`', the latest per request id), and
    what the join found."""
    now = now or datetime.now(UTC)
    start = now - since if isinstance(since, timedelta) else since
    paths = predlog.files(root, predlog.RECORDS, start)
    if not paths:
        window = f" since {start:%Y-%m-%d %H:%M:%S} UTC" if start else ""
        raise UserError(f"{root}: the prediction log has no records{window}")
    records = _read_parquet(paths, ray_cfg)
    if start is not None:
        records = records[records["time"] >= pd.Timestamp(start)].reset_index(drop=True)
        if records.empty:
            raise UserError(f"{root}: the prediction log has no records since "
                            f"{start:%Y-%m-%d %H:%M:%S} UTC")  # fmt: skip
    label_files = predlog.files(root, predlog.LABELS)
    found = [_read_parquet(label_files, ray_cfg)] if label_files else []
    if labels:  # after the label log: on the same request id, the file's label wins
        found.append(read_labels(labels))
    given = pd.concat(found, ignore_index=True) if found else pd.DataFrame(
        {"request_id": pd.Series(dtype=str), "income": pd.Series(dtype=str)})  # fmt: skip
    latest = given.drop_duplicates("request_id", keep="last").set_index("request_id")["income"]
    known = set(records["request_id"])
    records[LABEL_COLUMN] = records["request_id"].map(latest)
    join = {
        "labels_received": len(given),
        "labelled_rows": int(records[LABEL_COLUMN].notna().sum()),
        # Not in this window's records: a typo, another log, or a request before --since.
        "unknown_ids": int((~latest.index.isin(known)).sum()),
        "duplicate_request_ids": int(records["request_id"].duplicated().sum()),
    }
    return records, join


def _version_report(frame: pd.DataFrame, bundle: Path, version: str,
                    cfg: MonitorConfig) -> dict[str, Any]:  # fmt: skip
    """Drift of one version's logged rows against that version's own reference (features the
    log left out are not judged), and its live figures on the labelled rows."""
    reference = _reference(bundle, version)
    present = [c for c in FEATURE_COLUMNS if c in frame]
    n = len(frame)
    columns: dict[str, Any] = {}
    for c in FEATURE_COLUMNS:
        if c in frame:
            values = frame[c]
            if c in NUMERIC_COLUMNS:
                columns[c] = values.to_numpy(np.float64, na_value=np.nan)
            else:  # Arrow strings come back with pd.NA for null: the preprocessor wants None
                columns[c] = [None if pd.isna(v) else v for v in values.tolist()]
        else:
            columns[c] = np.full(n, np.nan) if c in NUMERIC_COLUMNS else [None] * n
    # Only the preprocessor: the probabilities are the logged ones, the weights are not needed.
    x_cat, _ = Preprocessor.load(bundle / PREPROCESSOR).transform(columns)
    codes = bin_codes(reference, x_cat, columns)
    probability = frame["probability"].to_numpy(np.float64)  # what was served, not re-scored
    report = drift_report(reference, codes, probability, cfg.psi_threshold)
    report["feature_psi"] = {k: v for k, v in report["feature_psi"].items() if k in present}
    report["drifted_features"] = [f for f in report["drifted_features"] if f in present]
    report["drift"] = bool(report["drifted_features"]) or report["score_psi"] > cfg.psi_threshold
    report["not_logged"] = [c for c in FEATURES if c not in present]
    labelled = frame[LABEL_COLUMN].notna().to_numpy()
    report["performance"] = None
    if labelled.any():
        y = (frame.loc[labelled, LABEL_COLUMN] == POSITIVE_LABEL).to_numpy(int)
        report["performance"] = _performance(y, probability[labelled], reference, cfg)
    report["_codes"], report["_reference"] = codes, reference
    return report


def check_log(root: str, since: timedelta | datetime | None, labels: str | None,
              bundle_for: Callable[[str], AbstractContextManager[Path]], cfg: MonitorConfig,
              ray_cfg: RayConfig) -> dict[str, Any]:  # fmt: skip
    """`ray-app monitor --data <prediction log>`: each model version's rows of the window
    against that version's reference; the report's top level is the version serving last."""
    records, join = read_log(root, since, labels, ray_cfg)
    records = records.sort_values("time", kind="stable")
    serving = str(records["model_version"].iloc[-1])
    versions: dict[str, dict[str, Any]] = {}
    for version, rows in records.groupby("model_version", sort=False):
        with bundle_for(str(version)) as bundle:
            versions[str(version)] = _version_report(rows, bundle, str(version), cfg)
    top = versions[serving]
    labelled = records[records[LABEL_COLUMN].notna()]
    performance = None
    if len(labelled):
        y = (labelled[LABEL_COLUMN] == POSITIVE_LABEL).to_numpy(int)
        performance = _performance(y, labelled["probability"].to_numpy(np.float64),
                                   top["_reference"], cfg)  # fmt: skip
        performance["dropped"] = performance["dropped"] or any(
            v["performance"] and v["performance"]["dropped"] for v in versions.values()
        )
    report = {k: v for k, v in top.items() if not k.startswith("_") and k != "performance"}
    report.update(
        data=root, since=None if since is None else str(since), model_version=serving,
        rows=len(records), bad_rows=0, labels=join, performance=performance,
        uncertainty=None,  # the log keeps each record's probability, not the members' spread
        drift=any(v["drift"] for v in versions.values()),
        versions={k: {x: y for x, y in v.items() if not x.startswith("_")}
                  for k, v in versions.items()},
    )  # fmt: skip
    return _finish(report, int(top["rows"]), top["_codes"], top["_reference"])
