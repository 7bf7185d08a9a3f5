"""Against a real `serve run` of the Serve config on a local Ray (the RayService's document)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_app.api import NO_KEY
from ray_app.config import DataConfig
from ray_app.data import FEATURE_COLUMNS, load_splits
from ray_app.serve import SERVE_ENV, ServeArgs, render_config, serve_config

from .conftest import ENV, REPO, descendants, free_port, stop_group
from .test_api import RECORD

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
API_KEYS = "old-key,new-key"  # pragma: allowlist secret (test keys: a rotation)
AUTH = {"Authorization": "Bearer new-key"}


def predict(url: str, **kwargs) -> httpx.Response:
    """POST /predict with an API key (the served app requires one)."""
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return httpx.post(f"{url}/predict", headers=headers, **kwargs)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`serve run` the generated config on an empty registry (cold start), then train.

    Before training the app must answer /health 'no-model' and /predict 503; the first
    champion the training registers must then be served without a redeploy.
    """
    work = tmp_path_factory.mktemp("serve")
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    port = free_port()
    args = ServeArgs(tracking_uri=tracking, max_records=1000, model_poll_s=1)
    path = work / "serve-config.yaml"
    path.write_text(render_config(serve_config(args, "127.0.0.1", port)))
    log = (work / "serve.log").open("w")
    # HAProxy's stats and metrics listeners get free ports too (defaults 8404, 9101).
    env = {**ENV, **SERVE_ENV, "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_APP_API_KEY": API_KEYS}  # fmt: skip
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", str(path)], env=env, cwd=work, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def wait_for(status: str, limit_s: float) -> dict:
        deadline = time.time() + limit_s
        body: dict = {}
        while time.time() < deadline:
            try:
                response = httpx.get(f"{url}/health", timeout=5)
                body = response.json()
                if response.status_code == 200 and body["status"] == status:
                    return body
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None:
                break
            time.sleep(1)
        pytest.fail(f"/health never said {status!r} (last {body}):\n"
                    f"{(work / 'serve.log').read_text()[-3000:]}")  # fmt: skip

    try:
        cold_health = wait_for("no-model", 180)
        cold_predict = predict(url, json=RECORD, timeout=10)
        # `ray-app train` starts a Ray of its own (address "local"), not serve run's.
        train = subprocess.run(
            ["ray-app", "train", "--subsample", "3000", "--epochs", "2", "--json",
             "--tracking-uri", tracking, "--storage-path", str(work / "ray_results")],
            env=ENV, capture_output=True, text=True, timeout=600, cwd=work,
        )  # fmt: skip
        assert train.returncode == 0, train.stderr[-3000:]
        wait_for("ready", 60)
        yield {"url": url, "tracking": tracking, "proc": proc, "work": work,
               "cold_health": cold_health, "cold_predict": cold_predict}  # fmt: skip
    finally:
        stop_group(proc, signal.SIGINT, 60)  # serve run shuts the app and its local Ray down
        log.close()


def test_cold_start_answers_no_model_then_serves_the_first_champion(served):
    detail = ("no model is registered yet (models:/adult-income@champion names no version): "
              "train one (ray-app train, or the train RayJob); it is served as soon as it is "
              "registered")  # fmt: skip
    assert served["cold_health"] == {"status": "no-model", "model_version": None,
                                     "detail": detail}  # fmt: skip
    assert served["cold_predict"].status_code == 503
    assert served["cold_predict"].json() == {"detail": [detail]}
    # The champion the training registered is served by the same deployment, no redeploy.
    body = predict(served["url"], json=RECORD).json()
    assert body["model_version"] == "1"
    assert body["predictions"][0]["model_version"] == "1"


def test_config_is_the_committed_one():
    committed = (REPO / "kuberay" / "serve-config.yaml").read_text()
    assert committed == render_config(serve_config()), "run: ray-app serve-config"
    app = yaml.safe_load(committed)["applications"][0]
    assert app["import_path"] == "ray_app.serve:build_app"
    assert {d["name"]: d["max_ongoing_requests"] for d in app["deployments"]}["Model"] > 5


def test_health_reports_the_registered_version(served):
    body = httpx.get(f"{served['url']}/health").json()
    assert body == {"status": "ready", "model_version": "1"}


def test_predictions_equal_the_mlflow_logged_model(served):
    rows = load_splits(DataConfig(subsample=3000)).test[FEATURE_COLUMNS].head(50)
    records = [{k: (None if v != v else v) for k, v in r.items()} for r in rows.to_dict("records")]
    response = predict(served["url"], json=records, timeout=30)
    assert response.status_code == 200
    served_prob = np.array([p["probability"] for p in response.json()["predictions"]])
    mlflow.set_tracking_uri(served["tracking"])
    logged = mlflow.pyfunc.load_model("models:/adult-income@champion")
    np.testing.assert_allclose(served_prob, logged.predict(rows)["probability"], atol=1e-6)
    single = predict(served["url"], json=records[0]).json()["predictions"]
    assert single[0]["probability"] == pytest.approx(served_prob[0], abs=1e-6)


def test_metrics_are_prometheus_text(served):
    predict(served["url"], json=RECORD)
    text = httpx.get(f"{served['url']}/metrics").text
    assert 'adult_model_info{model_version="1"} 1.0' in text
    assert 'adult_requests_total{path="/predict",status="200"}' in text
    assert "adult_request_latency_seconds_bucket" in text


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {**RECORD, "age": "abc"}}, 422),
        ({"json": {k: v for k, v in RECORD.items() if k != "race"}}, 422),
        ({"json": {**RECORD, "favourite_colour": "blue"}}, 422),
        ({"json": {**RECORD, "capital_loss": 10**9}}, 422),
        ({"json": {**RECORD, "native_country": "Atlantis"}}, 422),
        ({"json": []}, 422),
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, 422),
        ({"json": [RECORD] * 1001}, 413),
    ],
)
def test_every_bad_input_class_gets_its_4xx(served, kwargs, status):
    response = predict(served["url"], timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(),  # NaN, inf too
    st.text(max_size=12), st.sampled_from(["Male", "Private", "?", "United-States"]),
)  # fmt: skip
records = st.dictionaries(st.sampled_from([*FEATURE_COLUMNS, "extra", "age "]), values)
# Valid records with one field replaced by anything, and arbitrary JSON shapes.
almost_valid = st.builds(
    lambda key, value: {**RECORD, key: value}, st.sampled_from(FEATURE_COLUMNS), values
)
bodies = st.one_of(records, st.lists(records, max_size=4), values, almost_valid,
                   st.lists(almost_valid, min_size=1, max_size=3))  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_fuzzed_bodies_never_get_a_5xx(served, body):
    response = predict(served["url"], content=json.dumps(body), timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code < 500, (body, response.text)


def test_killed_model_replica_is_replaced(served):
    replicas = [p for p in descendants(served["proc"].pid)
                if "ServeReplica:adult-income:Model" in _cmdline(p)]  # fmt: skip
    assert replicas, "no Model replica process found under serve run"
    os.kill(replicas[0], signal.SIGKILL)
    statuses = []
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            statuses.append(predict(served["url"], json=RECORD, timeout=10).status_code)
        except httpx.HTTPError:
            statuses.append(0)
        if statuses[-3:] == [200, 200, 200]:
            break
        time.sleep(0.5)
    assert statuses[-3:] == [200, 200, 200], statuses[-20:]
    health = httpx.get(f"{served['url']}/health").json()
    assert health["status"] == "ready"


def test_predict_needs_an_api_key_and_health_does_not(served):
    url = served["url"]
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        refused = httpx.post(f"{url}/predict", json=RECORD, headers=headers, timeout=10)
        assert refused.status_code == 401 and refused.json() == {"detail": [NO_KEY]}
    assert predict(url, json=RECORD, headers={"Authorization": "Bearer old-key"}).status_code == 200
    assert httpx.get(f"{url}/health").json()["status"] == "ready"
    assert "new-key" not in httpx.get(f"{url}/metrics").text


def test_a_huge_body_gets_413_before_it_is_parsed_sized_or_chunked(served):
    """3 MB of a valid but padded empty list (parsed, it would be a 422): 413 from the size
    alone, with a Content-Length and streamed chunked without one."""
    body = b"[" + b" " * (3 * 2**20) + b"]"
    too_big = {"detail": [f"body: over {2 * 2**20} bytes; at most {2 * 2**20} per request"]}
    headers = {"content-type": "application/json"}
    sized = predict(served["url"], content=body, headers=headers, timeout=30)
    assert sized.status_code == 413 and sized.json() == too_big

    def stream():
        for start in range(0, len(body), 2**16):
            yield body[start : start + 2**16]

    chunked = predict(served["url"], content=stream(), headers=headers, timeout=30)
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and chunked.json() == too_big
