"""API tests without Ray: validation and error messages, metrics, docs (FastAPI TestClient)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ray_app.core.config import FeatureConfig, ModelConfig
from ray_app.core.schema import CATEGORICAL_COLUMNS, FEATURE_COLUMNS
from ray_app.ml.bundle import build_model
from ray_app.ml.features import Preprocessor
from ray_app.ml.model import StackedMLP
from ray_app.ml.scoring import Scorer
from ray_app.serving.api import DOCS_ASSETS, Unavailable, create_api
from ray_app.serving.guards import NO_KEY
from ray_app.serving.plain import LocalScoring
from ray_app.serving.schemas import ValidationErrorBody
from tests.support.procs import REPO
from tests.support.samples import RECORD


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


class _FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given: probabilities on both sides of the threshold."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x_cat, x_num):
        return self.logits[: len(x_cat)]


def test_labels_follow_the_documented_threshold_at_the_boundary(small_splits):
    """README/OpenAPI: label '>50K' when P(>50K) >= 0.5. Logits around 0 put probabilities
    just below, at and just above 0.5; the expected labels are written out, not recomputed."""
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    scoring = LocalScoring(Scorer(pre, _FixedLogits([-1e-3, 0.0, 1e-3, -4.0, 4.0])), "7")
    http = TestClient(create_api(lambda: scoring, lambda: 10))
    body = http.post("/predict", json=[RECORD] * 5).json()
    assert [p["label"] for p in body["predictions"]] == [
        "<=50K", ">50K", ">50K", "<=50K", ">50K"
    ]  # fmt: skip


def _uci_values(column: str) -> list[str]:
    """The allowed values as data/adult.names lists them (the oracle is the UCI file)."""
    line = next(ln for ln in (REPO / "data" / "adult.names").read_text().splitlines()
                if ln.startswith(f"{column.replace('_', '-')}:"))  # fmt: skip
    return [v.strip().rstrip(".") for v in line.split(":", 1)[1].split(",")]


def test_an_unknown_category_is_a_422_listing_the_uci_values(client):
    http, _ = client
    response = http.post("/predict", json={**RECORD, "workclass": "Astronaut"})
    assert response.status_code == 422
    allowed = _uci_values("workclass")
    assert len(allowed) == 8  # and '?': workclass is one of the columns with missing values
    message = "Input should be " + ", ".join(f"'{v}'" for v in allowed) + " or '?'"
    assert response.json() == {
        "detail": [f"field 'workclass': {message}"],
        "errors": [{"loc": ["body", "workclass"], "msg": message, "type": "literal_error"}],
    }


def test_an_in_schema_category_never_seen_in_training_goes_to_the_oov_bucket(client, small_splits):
    """In adult.names but not in this training sample: accepted, scored as 'unknown'."""
    http, scorer = client
    seen = set(small_splits.train["native_country"].dropna())
    unseen = [c for c in _uci_values("native_country") if c not in seen][:2]
    assert len(unseen) == 2, "the 3,000-row sample holds every country"
    probs = []
    for country in unseen:
        response = http.post("/predict", json={**RECORD, "native_country": country})
        assert response.status_code == 200
        probs.append(response.json()["predictions"][0]["probability"])
    assert probs[0] == probs[1]  # one bucket for every unseen value...
    frame = pd.DataFrame([{**RECORD, "native_country": c} for c in [*unseen, "United-States"]])
    x_cat, _ = scorer.preprocessor.transform(frame)
    codes = x_cat[:, CATEGORICAL_COLUMNS.index("native_country")]
    assert codes.tolist()[:2] == [0, 0] and codes[2] != 0  # ...index 0, the OOV bucket


def test_503_bodies_before_the_model_and_on_an_empty_registry():
    starting = TestClient(create_api(lambda: None, lambda: 5))
    assert starting.post("/predict", json=RECORD).json() == {"detail": ["model not loaded yet"]}
    health = starting.get("/health")
    assert (health.status_code, health.json()) == (503, {"status": "loading",
                                                         "model_version": None})  # fmt: skip

    class NoModel:
        model_version = None

        async def ready(self) -> bool:
            return True

        async def score(self, columns):
            return None

    empty = TestClient(create_api(lambda: NoModel(), lambda: 5,
                                  lambda: "models:/adult-income@champion"))  # fmt: skip
    detail = ("no model is registered yet (models:/adult-income@champion names no version): "
              "train one (ray-app train, or the train RayJob); it is served as soon as it is "
              "registered")  # fmt: skip
    predict = empty.post("/predict", json=RECORD)
    assert (predict.status_code, predict.json()) == (503, {"detail": [detail]})
    health = empty.get("/health")
    assert (health.status_code, health.json()) == (
        200, {"status": "no-model", "model_version": None, "detail": detail}
    )  # fmt: skip


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
        ({**RECORD, "education": "Kindergarten"}, 422, "field 'education'"),
        ([RECORD, {**RECORD, "hours_per_week": -3}], 422, "record 1, field 'hours_per_week'"),
        ([], 422, "empty"),
        ([RECORD] * 6, 422, "at most 5"),
    ],
)
def test_bad_input_gets_a_4xx_naming_record_and_field(client, body, status, fragment):
    http, _ = client
    response = http.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert any(fragment in line for line in response.json()["detail"]), response.json()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[" + b"\x80" * 3 + b"]"])
def test_a_body_that_is_not_json_is_a_422_shaped_as_documented(client, content):
    """Not JSON, and bytes that are not UTF-8 (FastAPI's own answer there is a 400 with a
    string detail): both the documented ValidationErrorBody."""
    http, _ = client
    response = http.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    ValidationErrorBody.model_validate(response.json())


def test_the_openapi_document_states_the_limits_errors_and_auth():
    doc = TestClient(create_api(lambda: None, lambda: 7, keys=lambda: (b"k",))).get(
        "/openapi.json").json()  # fmt: skip
    post = doc["paths"]["/predict"]["post"]
    array = next(b for b in post["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
             if b.get("type") == "array")  # fmt: skip
    assert (array["minItems"], array["maxItems"]) == (1, 7)
    assert set(post["responses"]) == {"200", "401", "408", "413", "422", "503"}
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidationErrorBody")  # fmt: skip
    assert set(post["responses"]["503"]["content"]) == {"application/json", "text/plain"}
    assert post["security"] == [{"apiKey": []}]
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    open_doc = TestClient(create_api(lambda: None, lambda: 7, keys=lambda: ())).get(
        "/openapi.json").json()  # fmt: skip
    assert "security" not in open_doc["paths"]["/predict"]["post"]


def test_a_lost_replica_is_a_503_with_retry_after():
    class Lost:
        model_version = "3"

        async def ready(self) -> bool:
            return True

        async def score(self, columns):
            raise Unavailable("the Model replica was lost mid-request; retry")

    response = TestClient(create_api(lambda: Lost(), lambda: 5)).post("/predict", json=RECORD)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"detail": ["the Model replica was lost mid-request; retry"]}


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
    assert http.get("/health").json() == {
        "status": "ready",
        "model_version": "7",
        "ensemble_members": 1,
    }
    schema = http.get("/openapi.json").json()
    assert "/predict" in schema["paths"]
    # The docs pages load their scripts from this app, not a CDN (air-gapped clusters).
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = http.get(page).text
        assert f'src="{DOCS_ASSETS}/{script}"' in html and "cdn." not in html, html
        asset = http.get(f"{DOCS_ASSETS}/{script}")
        assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
        assert len(asset.content) > 500_000  # the bundle itself, not an error page


KEYS = (b"old-key", b"new-key")  # two keys: a rotation in progress


@pytest.fixture(scope="module")
def guarded(client):
    _, scorer = client
    scoring = LocalScoring(scorer, "7")
    app = create_api(lambda: scoring, lambda: 5, max_body_bytes=lambda: 4096, keys=lambda: KEYS)
    return TestClient(app)


def test_predict_needs_one_of_the_api_keys_and_health_stays_open(guarded):
    wrong = ["", "Bearer wrong", "old-key", "Basic old-key", "Bearer old-key2", "Bearer "]
    for value in wrong:
        headers = {"Authorization": value} if value else {}
        refused = guarded.post("/predict", json=RECORD, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json() == {"detail": [NO_KEY]}
        assert refused.headers["www-authenticate"] == "Bearer"
    for key in KEYS:  # either key of a rotation is accepted
        answer = guarded.post(
            "/predict", json=RECORD, headers={"Authorization": f"Bearer {key.decode()}"}
        )
        assert answer.status_code == 200
    assert guarded.get("/health").status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(guarded.get("/metrics").text)}
    refused_401 = {"path": "/predict", "status": "401"}
    counts = [s.value for s in families["adult_requests"].samples
              if s.labels == refused_401 and s.name.endswith("_total")]  # fmt: skip
    assert counts == [float(len(wrong))]  # counted, like every answer


def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(guarded):
    auth = {"Authorization": "Bearer new-key", "content-type": "application/json"}
    padded_empty_list = b"[" + b" " * 5000 + b"]"  # parsed, it would be a 422 (empty list)
    too_big = {"detail": ["body: over 4096 bytes; at most 4096 per request"]}
    sized = guarded.post("/predict", content=padded_empty_list, headers=auth)
    assert sized.status_code == 413 and sized.json() == too_big

    def stream():  # chunked: no Content-Length, counted as it arrives
        yield padded_empty_list[:3000]
        yield padded_empty_list[3000:]

    chunked = guarded.post("/predict", content=stream(), headers=auth)
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and chunked.json() == too_big
    under = guarded.post("/predict", content=b"[" + b" " * 4000 + b"]", headers=auth)
    assert under.status_code == 422  # under the limit: read, parsed, refused as empty


@pytest.fixture(scope="module")
def ensemble(small_splits):
    """A deep ensemble of three differently initialised members, and the members themselves."""
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(build_model(ModelConfig(), pre.cardinalities).eval())
    return Scorer(pre, StackedMLP(members).eval()), members


def test_each_answer_carries_the_members_spread_and_abstains_above_the_setting(
    ensemble, small_splits
):
    """spread = the standard deviation of the members' own probabilities, each member scored
    on its own here (not through the stacked pass the server uses); a single model: 0. With
    abstain_above between the smallest and largest spread, exactly the records above it get
    label null and a reason; the others keep their label."""
    scorer, members = ensemble
    rows = small_splits.test[FEATURE_COLUMNS].head(40).astype(object)
    records = [{k: (None if v != v else v) for k, v in r.items()} for r in rows.to_dict("records")]
    x_cat, x_num = (torch.from_numpy(a) for a in scorer.preprocessor.transform(rows))
    with torch.inference_mode():
        own = np.stack([torch.sigmoid(m(x_cat, x_num)).numpy() for m in members])  # (3, 40)
    expected = own.std(axis=0)
    assert expected.min() > 0
    scoring = LocalScoring(scorer, "9")
    got = TestClient(create_api(lambda: scoring, lambda: 100)).post("/predict", json=records)
    answers = got.json()["predictions"]
    assert [a["spread"] for a in answers] == pytest.approx(expected.tolist(), abs=1e-6)
    assert [a["probability"] for a in answers] == pytest.approx(own.mean(axis=0), abs=1e-6)
    assert all("abstained" not in a and a["label"] for a in answers)

    above = float(np.median(expected))
    http = TestClient(create_api(lambda: scoring, lambda: 100, abstain_above=lambda: above))
    answers = http.post("/predict", json=records).json()["predictions"]
    for answer, s in zip(answers, expected, strict=True):
        if s > above:
            assert answer["label"] is None and f"> abstain_above {above:g}" in answer["abstained"]
        else:
            assert answer["label"] in ("<=50K", ">50K") and "abstained" not in answer
    abstained = sum(a["label"] is None for a in answers)
    assert abstained == int((expected > above).sum()) and 0 < abstained < len(answers)
    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    count = [s.value for s in families["adult_prediction_spread"].samples
             if s.name.endswith("_count")]  # fmt: skip
    assert count == [len(records)]
    labels = {s.labels["label"]: s.value for s in families["adult_predictions"].samples
              if s.name.endswith("_total")}  # fmt: skip
    assert labels["abstained"] == abstained


def test_a_single_model_has_spread_zero(client):
    http, _ = client
    assert http.post("/predict", json=RECORD).json()["predictions"][0]["spread"] == 0.0
