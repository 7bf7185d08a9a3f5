"""What the KubeRay objects carry, run for real on a local `ray start --head`.

The RayJobs' entrypoint and runtime env go through `ray job submit`; the RayService's
serveConfigV2 goes through `PUT /api/serve/applications/` (the call KubeRay makes); the KFP
pipeline runs under kfp.local against the same head. Everything is read from the rendered
`local` overlay. Cluster-only values are the one thing replaced: the runtime env's MLflow URI
and storage path (in-cluster service and volume) and Serve's port (a free one here).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ray_app.core.schema import NUMERIC_COLUMNS
from ray_app.platform.kubecheck import render_overlay
from tests.e2e.conftest import API_KEY
from tests.support.procs import REPO
from tests.support.samples import RECORD

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CLUSTER_ONLY = {"MLFLOW_TRACKING_URI", "RAY_APP_STORAGE_PATH"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """The local overlay, rendered by kubectl kustomize: 'Kind/name' -> object."""
    objs = render_overlay(REPO / "kuberay" / "overlays" / "local")
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}


def test_a_token_head_refuses_a_command_without_its_token_in_seconds(head, tmp_path):
    """`--ray-address` of a head with token auth, from a command with no token or another
    one: exit 2 in seconds with one line (Ray's own client retried for ~24 s first)."""
    gcs = head["env"]["TEST_RAY_GCS_ADDRESS"]
    (tmp_path / "home").mkdir()  # no ~/.ray/auth_token there
    env = {k: v for k, v in head["env"].items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env["HOME"] = str(tmp_path / "home")
    for extra, has in (({}, "none"), ({"RAY_AUTH_TOKEN": "0" * 64}, "a different one")):
        start = time.monotonic()
        proc = subprocess.run([str(BIN / "ray-app"), "train", "--subsample", "3000",
                               "--ray-address", gcs], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)  # fmt: skip
        took = time.monotonic() - start
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        port = gcs.rsplit(":", 1)[1]
        expected = (rf"error: the Ray cluster at \S+:{port} wants an auth token and this "
                    rf"command has {has}: set RAY_AUTH_TOKEN .*")  # fmt: skip
        assert re.fullmatch(expected, last), last
        assert "Traceback" not in proc.stderr and took < 20, (took, proc.stderr[-2000:])


def _submit(head: dict, job: dict, name: str, *extra: str) -> dict:
    """`ray job submit` of a RayJob's entrypoint (+ `extra` options) and runtimeEnvYAML;
    returns the JSON result."""
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(runtime_env["env_vars"]) == CLUSTER_ONLY  # nothing else is swapped below
    runtime_env["env_vars"] = {
        "MLFLOW_TRACKING_URI": head["env"]["MLFLOW_TRACKING_URI"],
        "RAY_APP_STORAGE_PATH": str(head["work"] / "ray_results"),
    }
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address={head['url']}",
         f"--submission-id={name}", f"--runtime-env-json={json.dumps(runtime_env)}",
         "--", *shlex.split(job["spec"]["entrypoint"]), *extra],
        env=head["env"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


@pytest.fixture(scope="module")
def trained(head, rendered) -> dict:
    """The train RayJob's entrypoint and runtime env, on 6,000 rows and 3 epochs (what the
    payload proves does not depend on the data's size; the default run's quality is
    benchmarks/train_bench.py's claim)."""
    return _submit(head, rendered["RayJob/ray-app-train"], "rayjob-train", "--subsample",
                   "6000", "--epochs", "3")  # fmt: skip


def test_rayjob_train_payload_trains_and_registers(trained):
    assert trained["model_version"] == 1
    assert trained["champion"]["promoted"] is True
    # Learned something: the majority class alone is 0.76 accurate, log loss 0.55.
    assert trained["test_accuracy"] >= 0.82
    assert trained["test_log_loss"] <= 0.40


def test_rayjob_tune_payload_searches_and_registers(head, rendered, trained):
    """The tune RayJob's entrypoint and runtime env: a search (4 trials of 2 epochs on 3,000
    rows; ASHA's early stopping is tests/integration/training/test_tune.py's claim) and the
    retrain of the best, registered."""
    result = _submit(head, rendered["RayJob/ray-app-tune"], "rayjob-tune", "--subsample", "3000",
                     "--num-samples", "4", "--max-epochs", "2")  # fmt: skip
    assert result["trials"] == 4
    assert result["errored"] == 0
    assert result["model_version"] == 2


def _serve_api(head: dict, method: str, doc: dict | None = None) -> int:
    """The Serve REST API of the head's dashboard (what KubeRay calls for a RayService)."""
    request = urllib.request.Request(
        f"{head['url']}/api/serve/applications/",
        data=None if doc is None else json.dumps(doc).encode(),
        method=method,
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {head['env']['RAY_AUTH_TOKEN']}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return int(response.status)


def test_rayservice_serve_config_v2_answers_health_and_predict(head, rendered):
    """The RayService's serveConfigV2, as the release job and the deploy step apply it (the
    deploy step's field: `ray-app serve-config --rayservice`), through the Serve REST API."""
    assert "serveConfigV2" not in rendered["RayService/adult-income"]["spec"]
    body = subprocess.run([str(BIN / "ray-app"), "serve-config", "--rayservice"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    doc = yaml.safe_load(yaml.safe_load(body)["spec"]["serveConfigV2"])
    doc["http_options"]["port"] = head["serve_port"]
    assert _serve_api(head, "PUT", doc) == 200
    champion = MlflowClient(head["env"]["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        "adult-income", "champion"
    )
    base = f"http://127.0.0.1:{head['serve_port']}"
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(180):
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        health = client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["model_version"] == str(champion.version)
        anonymous = client.post("/predict", json=[RECORD])
        assert anonymous.status_code == 401, anonymous.text
        answer = client.post(
            "/predict", json=[RECORD], headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert answer.status_code == 200, answer.text
        prob = answer.json()["predictions"][0]["probability"]
    # The same record through the registered MLflow pyfunc (another code path, same model).
    mlflow.set_tracking_uri(head["env"]["MLFLOW_TRACKING_URI"])
    logged = mlflow.pyfunc.load_model(f"models:/adult-income/{champion.version}")
    frame = pd.DataFrame([RECORD]).astype({c: "float64" for c in NUMERIC_COLUMNS})
    expected = logged.predict(frame)["probability"].iloc[0]
    assert prob == pytest.approx(float(expected), abs=1e-6)


def test_pipeline_deploys_a_better_model_and_not_a_worse_one(head, tmp_path: Path):
    """kfp.local, jobs on the head. First run: preprocess -> train -> tune -> evaluate ->
    deploy. Second run on the same registry, worse (one epoch at a tiny learning rate): it
    registers a version that is not promoted, the dsl.If(improved) branch is not taken, and
    Serve keeps answering with the first run's champion."""
    db = tmp_path / "pipeline.db"
    base = [str(BIN / "ray-app"), "pipeline", "run", "--local", "--ray-address", head["url"],
            "--tracking-uri", f"sqlite:///{db}", "--storage-path", str(tmp_path / "rr"),
            "--serve-port", str(head["serve_port"])]  # fmt: skip

    def run(*args: str) -> str:
        proc = subprocess.run([*base, *args], env=head["env"], capture_output=True, text=True,
                              timeout=900, cwd=tmp_path)  # fmt: skip
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-5000:]
        return log

    def succeeded(task: str, log: str) -> bool:
        # The console: one line per step; kfp.local's own lines and the steps' output go to
        # the log file it names (there, the same task ended with SUCCESS).
        assert "Streamed logs" not in log
        path = re.search(r"Step output \(kfp.local, Ray jobs\): (\S+)", log)
        assert path, log[-3000:]
        steps = Path(path.group(1)).read_text()
        in_file = f"Task \x1b[96m'{task}'\x1b[0m finished with status \x1b[92mSUCCESS" in steps
        return in_file and re.search(rf"^  {task}\s+SUCCESS\s+[\d.]+ s$", log, re.M) is not None

    first = run("--train-args", "--subsample 3000 --epochs 2", "--tune", "--tune-args",
                "--subsample 3000 --num-samples 2 --max-epochs 2",
                "--pipeline-root", str(tmp_path / "runs1"))  # fmt: skip
    for task in ("preprocess-op", "train-op", "tune-op", "evaluate-op", "deploy-op"):
        assert succeeded(task, first), task
    assert "keep-op" not in first  # the tune branch ran, not the pass-through
    assert re.search(r"evaluate-op\s+champion: deploy", first), first
    assert "pipeline finished: 5 steps, new champion deployed" in first
    client = MlflowClient(f"sqlite:///{db}")
    versions = client.search_model_versions("name='adult-income'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # train, then tune's retrain
    champion = client.get_model_version_by_alias("adult-income", "champion").version
    health = httpx.get(f"http://127.0.0.1:{head['serve_port']}/health", timeout=10).json()
    assert health["model_version"] == str(champion)

    # The worse candidate: one epoch at a tiny learning rate, with a batch size the run
    # logs (the pipeline carries `ray-app train` options through to the RayJob).
    second = run("--train-args", "--subsample 3000 --epochs 1 --lr 1e-5 --batch-size 512",
                 "--pipeline-root", str(tmp_path / "runs2"))  # fmt: skip
    assert succeeded("evaluate-op", second)
    assert "deploy-op" not in second  # the dsl.If(improved) branch was not taken
    assert re.search(r"evaluate-op\s+not better: keep", second), second
    versions = client.search_model_versions("name='adult-income'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    third = client.get_run(str(client.get_model_version("adult-income", "3").run_id))
    params = third.data.params
    assert (params["train.lr"], params["train.batch_size"]) == ("1e-05", "512")
    assert client.get_model_version_by_alias("adult-income", "champion").version == champion
    health = httpx.get(f"http://127.0.0.1:{head['serve_port']}/health", timeout=10).json()
    assert health["model_version"] == str(champion)
