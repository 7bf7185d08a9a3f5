"""Drift and retraining: the reference in the bundle, PSI, `ray-app monitor` end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ray_app.core.config import FeatureConfig, PredictionLogConfig
from ray_app.core.schema import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    LABELS,
    label_name,
)
from ray_app.data.files import read_table
from ray_app.data.stats import column_stats
from ray_app.ml.drift import (
    FEATURES,
    DriftWindow,
    bin_codes,
    build_reference,
    drift_report,
    feature_psi,
)
from ray_app.ml.features import Preprocessor
from ray_app.ml.scoring import Scorer
from ray_app.serving.predlog import PredictionLog
from ray_app.tracking.registry import registry_bundle
from tests.integration.conftest import registry_copy
from tests.support.procs import ENV, REPO


@pytest.fixture(scope="module")
def fitted(splits):
    """The shipped training split's reference (stats as the training job counts them)."""
    stats = column_stats(splits.train)
    pre = Preprocessor.fit_stats(stats, FeatureConfig())
    scores = np.random.default_rng(0).beta(1, 3, 2000)
    return pre, build_reference(stats, pre, scores, {"test_log_loss": 0.28})


def test_reference_fractions_sum_to_one_and_training_rows_do_not_drift(splits, fitted):
    pre, reference = fitted
    for feature in FEATURES:
        assert sum(reference["features"][feature]["fractions"]) == pytest.approx(1.0)
    x_cat, _ = pre.transform(splits.train)
    psi = feature_psi(reference, bin_codes(reference, x_cat, splits.train))
    assert max(psi.values()) < 1e-3  # the rows the reference was counted on
    # The validation split (other rows, same population): well under the 0.1 "stable" mark.
    x_cat, _ = pre.transform(splits.val)
    val_psi = feature_psi(reference, bin_codes(reference, x_cat, splits.val))
    assert max(val_psi.values()) < 0.05, val_psi


def test_a_shift_is_flagged_naming_the_shifted_features(splits, fitted):
    pre, reference = fitted
    shifted = splits.val.copy()
    shifted["age"] = (shifted["age"] + 15).clip(upper=90)
    shifted["occupation"] = "Prof-specialty"
    x_cat, _ = pre.transform(shifted)
    scores = np.random.default_rng(1).beta(1, 3, len(shifted))
    report = drift_report(reference, bin_codes(reference, x_cat, shifted), scores, 0.2)
    assert report["drift"] is True
    assert set(report["drifted_features"]) == {"age", "occupation"}, report["feature_psi"]


def test_a_zero_inflated_feature_is_binned_finely_enough_to_show_a_shift(splits, fitted):
    """capital_gain is 0 in ~92 % of rows: plain deciles would all be 0 and one bin would hold
    every other value. Its own bin for 0 and quartiles of the tail make a shift visible."""
    pre, reference = fitted
    edges = reference["features"]["capital_gain"]["edges"]
    assert len(edges) >= 4 and edges[0] == 0.0
    shifted = splits.val.copy()
    shifted["capital_gain"] = 0.0  # nobody reports capital gains any more
    x_cat, _ = pre.transform(shifted)
    psi = feature_psi(reference, bin_codes(reference, x_cat, shifted))
    assert psi["capital_gain"] > 0.2, psi


def test_the_serving_window_keeps_the_last_rows(splits, fitted):
    pre, reference = fitted
    x_cat, _ = pre.transform(splits.val)
    codes = bin_codes(reference, x_cat, splits.val)
    window = DriftWindow(reference, size=1000)
    for start in range(0, 2700, 300):  # 9 batches: the ring wraps more than once
        window.add(codes[start : start + 300])
    last = codes[1700:2700]  # the window holds the last 1,000 rows (in another order)
    assert window.filled == 1000
    assert window.psi() == pytest.approx(feature_psi(reference, last))


# --- `ray-app monitor` on a real trained model ---------------------------------------------


def _write(frame: pd.DataFrame, path: Path) -> Path:
    out = frame.copy()
    out[LABEL_COLUMN] = np.where(out[LABEL_COLUMN] == 1, LABELS[1], LABELS[0])
    for column in CATEGORICAL_COLUMNS:
        out[column] = out[column].fillna("?")
    out.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(small_model, tmp_path_factory):
    """The tier's small model (3,000 rows, 2 epochs) in a registry of this module's own (the
    retrain registers into it); clean and shifted rows."""
    work = tmp_path_factory.mktemp("monitor")
    tracking = registry_copy(small_model, work)
    test = read_table(REPO / "data" / "adult.test")
    shifted = test.head(3000).copy()
    shifted["age"] = (shifted["age"] + 15).clip(upper=90)
    shifted["occupation"] = "Prof-specialty"
    return {"work": work, "tracking": tracking, "clean": REPO / "data" / "adult.test",
            "shifted": _write(shifted, work / "shifted.csv")}  # fmt: skip


def _monitor(trained: dict, data: Path, *extra: str) -> dict:
    proc = subprocess.run(
        ["ray-app", "monitor", "--data", str(data), "--tracking-uri", trained["tracking"],
         "--json", "--out", str(trained["work"] / f"report-{data.stem}-{len(extra)}"), *extra],
        env=ENV, capture_output=True, text=True, timeout=900, cwd=trained["work"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_monitor_reports_no_drift_on_the_official_test_file(trained):
    """False-positive check: adult.test (16,281 rows the model never saw) against a model
    trained on 3,000 rows of adult.data."""
    report = _monitor(trained, trained["clean"], "--retrain", "--dry-run")
    print("adult.test PSI:", report["feature_psi"], "score", report["score_psi"])
    assert report["drift"] is False, report["feature_psi"]
    assert report["drifted_features"] == []
    assert report["rows"] == 16281
    live = report["performance"]["live"]
    assert live["accuracy"] > 0.8 and report["performance"]["dropped"] is False
    assert report["retrain"] is None  # nothing to retrain for
    assert report["uncertainty"] is None  # one model: no members to disagree


@pytest.mark.slow
def test_monitor_flags_a_shift_and_the_dry_run_names_the_training_it_would_start(trained):
    report = _monitor(trained, trained["shifted"], "--retrain", "--dry-run",
                      "--train-args", "--subsample 3000 --epochs 1")  # fmt: skip
    print("shifted PSI:", report["feature_psi"], "score", report["score_psi"])
    assert report["drift"] is True
    assert report["drifted_features"][:2] in (["age", "occupation"], ["occupation", "age"])
    assert report["retrain"]["dry_run"] is True and report["retrain"]["started"] is False
    assert report["retrain"]["command"].startswith("ray-app train --subsample 3000 --epochs 1")
    folder = Path(report["report"])
    assert {"drift_age.png", "drift_occupation.png", "report.json"} <= {
        p.name for p in folder.iterdir()}  # fmt: skip
    mlflow.set_tracking_uri(trained["tracking"])
    run = MlflowClient().get_run(report["mlflow_run_id"])
    assert run.data.tags["drift"] == "true" and run.data.metrics["psi_age"] > 0.2


def _log_rows(
    frame: pd.DataFrame, version: str, prefix: str, log: PredictionLog, scorer: Scorer
) -> list[str]:
    """Write `frame` to the log as the serving graph would: scored by `scorer`, as `version`."""
    columns = {c: [None if v != v else v for v in frame[c]] for c in FEATURE_COLUMNS}
    probability = scorer.predict_proba(frame).tolist()
    ids = [f"{prefix}-{i}" for i in range(len(frame))]
    log.add(columns, ids, probability, [label_name(p) for p in probability], version)
    return ids


@pytest.mark.slow
def test_a_log_over_two_versions_judges_each_against_its_own_reference(trained, tmp_path):
    """A prediction log written by the serving graph's writer over two registered versions:
    version 1 served clean rows, version 2 (the one serving last) shifted ages. The monitor
    reads it with Ray Data, splits it by version (only version 2 drifts), joins labels from a
    CSV by request id (one unknown id counted), removes partitions past the retention period,
    and with --retrain --dry-run names the training it would start."""
    mlflow.set_tracking_uri(trained["tracking"])
    first = MlflowClient().get_model_version("adult-income", "1")
    mlflow.register_model(first.source, "adult-income")  # version 2: the same bundle
    with registry_bundle("models:/adult-income/1") as bundle:
        scorer = Scorer.from_bundle(bundle)
    test = read_table(REPO / "data" / "adult.test")
    clean, shifted = test.iloc[:1500], test.iloc[1500:3000].copy()
    shifted["age"] = shifted["age"] + 20
    root = tmp_path / "log"
    log = PredictionLog(str(root), PredictionLogConfig(flush_s=60))
    _log_rows(clean, "1", "v1", log, scorer)
    ids = _log_rows(shifted, "2", "v2", log, scorer)
    log.close()
    old = root / "records" / "date=2020-01-01"
    old.mkdir()
    (old / "part-old.parquet").write_bytes(b"not read: removed first")
    labels = pd.DataFrame(
        {
            "request_id": [*ids[:500], "nobody-1"],
            "income": [LABELS[int(y)] for y in shifted["income"][:500]] + [">50K"],
        }
    )
    labels.to_csv(tmp_path / "labels.csv", index=False)
    report = _monitor(trained, root, "--labels", str(tmp_path / "labels.csv"),
                      "--retention-days", "30", "--retrain", "--dry-run")  # fmt: skip
    assert report["retention"]["removed"] == ["records/date=2020-01-01"] and not old.exists()
    assert report["rows"] == 3000 and report["model_version"] == "2"
    one, two = report["versions"]["1"], report["versions"]["2"]
    assert one["rows"] == two["rows"] == 1500
    assert one["drift"] is False and one["drifted_features"] == []
    assert two["drift"] is True and two["drifted_features"] == ["age"]
    assert report["drift"] is True and report["drifted_features"] == ["age"]
    assert report["labels"] == {"labels_received": 501, "labelled_rows": 500, "unknown_ids": 1,
                                "duplicate_request_ids": 0}  # fmt: skip
    y = shifted["income"].to_numpy()[:500]
    p = scorer.predict_proba(shifted.iloc[:500])
    assert report["performance"]["labelled_rows"] == 500
    assert report["performance"]["live"]["accuracy"] == pytest.approx(
        float(np.mean((p >= 0.5) == (y == 1))), abs=1e-4
    )
    assert one["performance"] is None and two["performance"]["labelled_rows"] == 500
    assert report["retrain"]["dry_run"] is True


def test_alerts_and_dashboard_use_metrics_the_api_exports():
    """Every metric the PrometheusRule and the Grafana dashboard query is one a replica's
    /metrics really carries (a renamed metric would silently break the alert)."""
    import re

    from ray_app.serving.metrics import ApiMetrics

    metrics = ApiMetrics("3")
    metrics.set_drift({"rows": 600, "feature_psi": {"age": 0.3}, "score_psi": 0.1})
    metrics.requests.labels(path="/predict", status="200").inc()
    metrics.latency.labels(path="/predict").observe(0.01)
    metrics.predictions.labels(label=">50K").inc()
    exported = set(re.findall(r"^(\w+)(?:\{| )", metrics.render().decode(), re.M))
    folder = REPO / "kuberay" / "components" / "monitoring"
    rules = yaml.safe_load((folder / "prometheusrule.yaml").read_text())
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((folder / "ray-app-serving.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {name for e in exprs for name in re.findall(r"\b(adult_\w+)", e)}
    assert queried and queried <= exported, queried - exported
