"""API tests without Ray: validation and error messages, metrics, docs (FastAPI TestClient)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ray_app.api import create_api
from ray_app.artifacts import Scorer, build_model
from ray_app.config import FeatureConfig, ModelConfig
from ray_app.data import FEATURE_COLUMNS
from ray_app.features import Preprocessor
from ray_app.plain_server import LocalScoring

RECORD = {
    "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
    "education_num": 13, "marital_status": "Never-married", "occupation": "Adm-clerical",
    "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital_gain": 2174,
    "capital_loss": 0, "hours_per_week": 40, "native_country": "United-States",
}  # fmt: skip


@pytest.fixture(scope="module")
def client(small_splits):
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    scorer = Scorer(pre, build_model(ModelConfig(), pre.cardinalities).eval())
    scoring = LocalScoring(scorer, "7")
    return TestClient(create_api(lambda: scoring, lambda: 5)), scorer


def test_single_and_batch_predictions_match_the_scorer(client, small_splits):
    http, scorer = client
    one = http.post("/predict", json=RECORD)
    assert one.status_code == 200
    body = one.json()
    assert body["model_version"] == "7" and len(body["predictions"]) == 1
    rows = small_splits.test[FEATURE_COLUMNS].head(4).astype(object)
    records = [{k: (None if v != v else v) for k, v in r.items()} for r in rows.to_dict("records")]
    many = http.post("/predict", json=records).json()["predictions"]
    expected = scorer.predict_proba(small_splits.test.head(4))
    assert [p["probability"] for p in many] == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(p["label"] == (">50K" if p["probability"] >= 0.5 else "<=50K") for p in many)


def test_hyphenated_names_and_missing_categories_are_accepted(client):
    http, _ = client
    record = {k.replace("_", "-"): v for k, v in RECORD.items()}
    record["occupation"] = "?"
    assert http.post("/predict", json=record).status_code == 200
    record["occupation"] = None
    assert http.post("/predict", json=record).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({**RECORD, "age": "abc"}, 422, "field 'age'"),
        ({k: v for k, v in RECORD.items() if k != "sex"} | {"sex": None}, 422, "field 'sex'"),
        ({k: v for k, v in RECORD.items() if k != "age"}, 422, "field 'age': Field required"),
        ({**RECORD, "zodiac": "Leo"}, 422, "field 'zodiac'"),
        ({**RECORD, "age": 500}, 422, "field 'age'"),
        ({**RECORD, "workclass": "Astronaut"}, 422, "field 'workclass'"),
        ([RECORD, {**RECORD, "hours_per_week": -3}], 422, "record 1, field 'hours_per_week'"),
        ([], 422, "empty"),
        ([RECORD] * 6, 413, "at most 5"),
    ],
)
def test_bad_input_gets_a_4xx_naming_record_and_field(client, body, status, fragment):
    http, _ = client
    response = http.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert any(fragment in line for line in response.json()["detail"]), response.json()


def test_non_json_body_is_a_422(client):
    http, _ = client
    response = http.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_metrics_are_prometheus_text_with_counts_and_version(client):
    http, _ = client
    http.post("/predict", json=RECORD)
    text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"adult_requests", "adult_request_latency_seconds", "adult_predictions",
            "adult_model_info"} <= set(families)  # fmt: skip
    info = families["adult_model_info"].samples[0]
    assert info.labels == {"model_version": "7"} and info.value == 1.0
    samples = families["adult_requests"].samples
    predict_counts = [s for s in samples if s.labels.get("path") == "/predict"]
    assert sum(s.value for s in predict_counts) >= 1


def test_health_and_docs(client):
    http, _ = client
    assert http.get("/health").json() == {"status": "ready", "model_version": "7"}
    assert http.get("/docs").status_code == 200
    schema = http.get("/openapi.json").json()
    assert "/predict" in schema["paths"]
