"""The prediction log without Ray: request ids, /feedback, the writer (files, sampling,
excluded fields, a full buffer, a failing sink), the layout's window and retention."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ray_app.core.config import FeatureConfig, ModelConfig, PredictionLogConfig, ServeConfig
from ray_app.core.errors import DataError
from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.core.settings import Settings
from ray_app.data import predlog
from ray_app.ml.bundle import build_model
from ray_app.ml.features import Preprocessor
from ray_app.ml.scoring import Scorer
from ray_app.serving.api import create_api
from ray_app.serving.plain import LocalScoring
from ray_app.serving.predlog import PredictionLog
from tests.support.samples import RECORD


@pytest.fixture(scope="module")
def scoring(small_splits):
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    return LocalScoring(Scorer(pre, build_model(ModelConfig(), pre.cardinalities).eval()), "7")


def _records(root: Path) -> pd.DataFrame:
    """Every complete record file, found as any Parquet reader would (not with the layout
    module under test)."""
    paths = [p for p in root.glob("records/date=*/*.parquet") if not p.name.startswith(".")]
    return pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name} {labels} not exported")


def test_each_record_gets_an_id_with_the_clients_prefix_and_is_logged_as_answered(
    scoring, tmp_path
):
    log = PredictionLog(str(tmp_path), PredictionLogConfig(flush_s=0.05))
    http = TestClient(create_api(lambda: scoring, lambda: 10, log=lambda: log))
    one = http.post("/predict", json=RECORD, headers={"X-Request-ID": "client-42"})
    batch = http.post("/predict", json=[RECORD, {**RECORD, "age": 61}])
    assert one.status_code == batch.status_code == 200
    assert [p["request_id"] for p in one.json()["predictions"]] == ["client-42-0"]
    generated = batch.headers["x-request-id"]
    assert len(generated) == 32 and "x-request-id" not in one.headers  # the client has its id
    ids = [p["request_id"] for p in batch.json()["predictions"]]
    assert ids == [f"{generated}-0", f"{generated}-1"]
    log.close()
    logged = _records(tmp_path).set_index("request_id")
    answered = one.json()["predictions"] + batch.json()["predictions"]
    assert sorted(logged.index) == sorted(p["request_id"] for p in answered)
    for p in answered:
        row = logged.loc[p["request_id"]]
        assert row["probability"] == p["probability"] and row["label"] == p["label"]
        assert row["model_version"] == "7"
    assert logged.loc[f"{generated}-1", "age"] == 61
    assert logged.loc["client-42-0", "workclass"] == RECORD["workclass"]
    assert set(FEATURE_COLUMNS) <= set(logged.columns)


def test_a_bad_request_id_header_is_a_422(scoring):
    http = TestClient(create_api(lambda: scoring, lambda: 10))
    response = http.post("/predict", json=RECORD, headers={"X-Request-ID": "a b" * 50})
    assert response.status_code == 422 and "X-Request-ID" in response.json()["detail"][0]


def test_feedback_appends_labels_and_shares_the_api_key(scoring, tmp_path):
    log = PredictionLog(str(tmp_path), PredictionLogConfig(flush_s=0.05))
    http = TestClient(create_api(lambda: scoring, lambda: 10, keys=lambda: (b"k",),
                                 log=lambda: log))  # fmt: skip
    body = [{"request_id": "r-0", "income": ">50K"}, {"request_id": "r-1", "income": "<=50K"}]
    assert http.post("/feedback", json=body).status_code == 401
    ok = http.post("/feedback", json=body, headers={"Authorization": "Bearer k"})
    assert ok.status_code == 200 and ok.json() == {"accepted": 2}
    bad = http.post("/feedback", json=[{"request_id": "r", "income": "rich"}],
                    headers={"Authorization": "Bearer k"})  # fmt: skip
    assert bad.status_code == 422 and "record 0, field 'income'" in bad.json()["detail"][0]
    log.close()
    paths = [p for p in tmp_path.glob("labels/date=*/*.parquet") if not p.name.startswith(".")]
    labels = pd.concat([pq.read_table(p).to_pandas() for p in paths])
    assert labels[["request_id", "income"]].values.tolist() == [["r-0", ">50K"], ["r-1", "<=50K"]]
    doc = http.get("/openapi.json").json()
    assert doc["paths"]["/feedback"]["post"]["security"] == [{"apiKey": []}]
    assert "request_id" in doc["components"]["schemas"]["Prediction"]["required"]


def test_feedback_without_a_log_is_a_409_saying_why(scoring):
    http = TestClient(create_api(lambda: scoring, lambda: 10))
    response = http.post("/feedback", json=[{"request_id": "r-0", "income": ">50K"}])
    assert response.status_code == 409 and "prediction log is off" in response.json()["detail"][0]


def _add(log: PredictionLog, n: int, prefix: str = "r") -> None:
    columns = {c: [RECORD.get(c)] * n for c in FEATURE_COLUMNS}
    log.add(columns, [f"{prefix}-{i}" for i in range(n)], [0.5] * n, [">50K"] * n, "3")


def test_sampling_and_excluded_fields(tmp_path):
    cfg = PredictionLogConfig(sample_rate=0.25, exclude=["native_country", "age"], flush_s=60)
    log = PredictionLog(str(tmp_path), cfg)
    _add(log, 4000)
    log.close()
    logged = _records(tmp_path)
    assert 800 < len(logged) < 1200  # binomial(4000, 0.25): sd 27
    assert "native_country" not in logged and "age" not in logged and "education" in logged
    with pytest.raises(ValueError, match="unknown feature"):
        PredictionLogConfig(exclude=["salary"])


def test_files_rotate_by_rows_and_by_time_and_partition_by_utc_day(tmp_path):
    now = [datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp()]
    log = PredictionLog(str(tmp_path), PredictionLogConfig(file_rows=100, flush_s=60),
                        clock=lambda: now[0])  # fmt: skip
    _add(log, 250, "a")  # 250 rows: over file_rows, so the thread writes without waiting
    deadline = time.monotonic() + 10
    while log.held["records"] and time.monotonic() < deadline:
        time.sleep(0.02)
    now[0] += 2  # the next day
    _add(log, 10, "b")
    log.close()
    days = {p.day.isoformat(): p for p in predlog.partitions(str(tmp_path), predlog.RECORDS)}
    assert sorted(days) == ["2026-12-01", "2026-12-02"]
    first = sorted(Path(days["2026-12-01"].path).glob("*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in first] == [100, 100, 50]
    since = datetime(2026, 12, 2, tzinfo=UTC)
    assert len(predlog.files(str(tmp_path), predlog.RECORDS, since)) == 1


def test_a_full_buffer_drops_and_counts_and_never_blocks(tmp_path):
    log = PredictionLog(str(tmp_path), PredictionLogConfig(buffer_rows=100, flush_s=60))
    start = time.perf_counter()
    for i in range(5):
        _add(log, 40, f"r{i}")  # 40, 80 held; the next three do not fit
    assert time.perf_counter() - start < 0.5
    text = log.render().decode()
    assert _metric(text, "adult_prediction_log_dropped_total", kind="records",
                   reason="buffer_full") == 120  # fmt: skip
    log.close()
    assert len(_records(tmp_path)) == 80
    assert _metric(log.render().decode(), "adult_prediction_log_written_total",
                   kind="records") == 80  # fmt: skip


def test_a_failing_sink_drops_exactly_what_it_did_not_write(tmp_path):
    root = tmp_path / "log"
    log = PredictionLog(str(root), PredictionLogConfig(flush_s=60))
    _add(log, 30, "ok")
    log.flush()
    shutil.move(root, tmp_path / "moved")
    root.write_text("not a folder")  # even root cannot create records/ under a file
    _add(log, 20, "lost")
    log.flush()
    text = log.render().decode()
    assert _metric(text, "adult_prediction_log_dropped_total", kind="records",
                   reason="sink_error") == 20  # fmt: skip
    assert _metric(text, "adult_prediction_log_written_total", kind="records") == 30
    assert _metric(text, "adult_prediction_log_buffered_rows", kind="records") == 0
    assert len(_records(tmp_path / "moved")) == 30
    log.close()


def test_retention_removes_whole_old_days_only(tmp_path):
    for kind in (predlog.RECORDS, predlog.LABELS):
        for day in ("2026-10-01", "2026-11-01", "2026-11-02", "2026-12-02"):
            (tmp_path / kind / f"date={day}").mkdir(parents=True)
    (tmp_path / predlog.RECORDS / "notes").mkdir()
    removed = predlog.remove_older_than(str(tmp_path), 30, datetime(2026, 12, 2, 12, tzinfo=UTC))
    assert removed == ["records/date=2026-10-01", "records/date=2026-11-01",
                       "labels/date=2026-10-01", "labels/date=2026-11-01"]  # fmt: skip
    left = sorted(os.listdir(tmp_path / predlog.RECORDS))
    assert left == ["date=2026-11-02", "date=2026-12-02", "notes"]


def test_window_and_labels_parsing():
    assert predlog.parse_since("24h") == timedelta(hours=24)
    assert predlog.parse_since("7d") == timedelta(days=7)
    assert predlog.parse_since("2026-12-02T10:00:00Z") == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert predlog.parse_since("2026-12-02T10:00") == datetime(2026, 12, 2, 10, tzinfo=UTC)
    with pytest.raises(DataError, match="expected a number and a unit"):
        predlog.parse_since("yesterday")
    good = predlog.check_labels(pd.DataFrame({"request_id": ["a"], "income": [">50K."]}), "f")
    assert good.values.tolist() == [["a", ">50K"]]
    with pytest.raises(DataError, match=r"f: row 2: request_id 'b', income 'rich'"):
        predlog.check_labels(pd.DataFrame({"request_id": ["a", "b"],
                                           "income": [">50K", "rich"]}), "f")  # fmt: skip
    with pytest.raises(DataError, match="missing \\['income'\\]"):
        predlog.check_labels(pd.DataFrame({"request_id": ["a"]}), "f")


def test_the_location_is_one_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings().prediction_log_location("off") is None
    assert Settings().prediction_log_location(None) == str(tmp_path / "ray_results/predictions")
    shared = Settings(RAY_APP_PREDICTION_LOG="/mnt/ray-shared/predictions")
    assert shared.prediction_log_location(None) == "/mnt/ray-shared/predictions"
    assert shared.prediction_log_location("s3://b/log") == "s3://b/log"
    assert ServeConfig().prediction_log.location is None  # resolved in the replica
