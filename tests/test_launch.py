"""The KubeRay launcher against a fake Kubernetes API that walks real RayJob status sequences.

Statuses are KubeRay v1.7's (`jobDeploymentStatus`: '' -> Initializing -> Running ->
Complete | Failed, with Retrying/Waiting between; `reason`: AppFailed, DeadlineExceeded,
SubmissionFailed). The fake validates what it is sent against the CRD schema, as the API
server would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ray_app import kuberay
from ray_app.kubecheck import load_crd_schemas, validate_ray_object
from ray_app.launch import JobFailed, KubeRayJobs, LaunchConfig, parse_result

from .test_kuberay import CRDS

RESULT = {"test_accuracy": 0.87, "model_version": 3}
LOGS = "INFO job started\nepoch 1 ...\n" + json.dumps(RESULT) + "\n------\nJob succeeded\n"

SUCCESS = [
    {},
    {"jobDeploymentStatus": "Initializing"},
    {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
]
APP_FAILED = [
    {"jobDeploymentStatus": "Initializing"},
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    {
        "jobDeploymentStatus": "Failed",
        "jobStatus": "FAILED",
        "reason": "AppFailed",
        "message": "Job entrypoint command failed with exit code 2",
    },
]
DEADLINE = [
    {"jobDeploymentStatus": "Initializing"},
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    {
        "jobDeploymentStatus": "Failed",
        "jobStatus": "RUNNING",
        "reason": "DeadlineExceeded",
        "message": "The RayJob has passed the activeDeadlineSeconds. "
        "StartTime: 2026-11-26T10:00:00Z. ActiveDeadlineSeconds: 3600",
    },
]
RETRIED = [
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"},
    {"jobDeploymentStatus": "Initializing"},
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
]


@pytest.fixture(scope="module")
def schemas():
    return load_crd_schemas(CRDS)


@dataclass
class FakeCluster:
    """CustomObjectsApi + CoreV1Api, enough of them for the launcher."""

    statuses: list[dict[str, Any]]
    schemas: dict
    logs: str = LOGS
    service_statuses: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.polls = 0

    # CustomObjectsApi
    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        errors = validate_ray_object(body, self.schemas)
        if errors:
            raise ValueError(f"422 Unprocessable Entity: {errors}")
        self.objects[body["metadata"]["name"]] = body
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if plural == "rayservices":
            status = self.service_statuses[min(self.polls, len(self.service_statuses) - 1)]
            self.polls += 1
            return {"metadata": {"name": name, "generation": 8}, "status": status}
        status = self.statuses[min(self.polls, len(self.statuses) - 1)]
        self.polls += 1
        return {**self.objects[name], "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        assert plural == "rayservices" and set(body) == {"spec"}
        self.patched = body
        return {"metadata": {"name": name, "generation": 8}}

    # CoreV1Api
    def list_namespaced_pod(self, namespace, label_selector):
        name = label_selector.removeprefix("job-name=")
        now = datetime(2026, 11, 26, 12, 0)
        pods = [
            SimpleNamespace(metadata=SimpleNamespace(name=f"{name}-old", creation_timestamp=now)),
            SimpleNamespace(
                metadata=SimpleNamespace(
                    name=f"{name}-new", creation_timestamp=now + timedelta(minutes=1)
                )
            ),
        ]
        return SimpleNamespace(items=pods)

    def read_namespaced_pod_log(self, name, namespace, tail_lines):
        assert name.endswith("-new")  # the latest submitter attempt
        return self.logs


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _launcher(cluster: FakeCluster, **cfg: Any) -> tuple[KubeRayJobs, list[str]]:
    clock, lines = FakeClock(), []
    launch = LaunchConfig(poll_s=5, timeout_s=60, **cfg)
    return KubeRayJobs(cluster, cluster, launch, lines.append, clock, clock.sleep), lines


def _job(name: str = "ray-app-train-abc") -> dict:
    return kuberay.with_image(kuberay.rayjob("train", ["--epochs", "2"], name=name), "img:1")


def test_success_returns_the_json_result_and_cleans_up(schemas):
    cluster = FakeCluster(SUCCESS, schemas)
    launcher, lines = _launcher(cluster)
    outcome = launcher.run(_job())
    assert outcome.result == RESULT
    assert outcome.status == "Complete/SUCCEEDED"
    assert cluster.deleted == ["ray-app-train-abc"]
    # every distinct state was reported once, in order
    states = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("RayJob ray-app/")]
    assert states == ["New/-", "Initializing/-", "Running/PENDING", "Running/RUNNING",
                      "Complete/SUCCEEDED"]  # fmt: skip


def test_app_failure_surfaces_message_and_logs_and_keeps_the_job(schemas):
    cluster = FakeCluster(APP_FAILED, schemas, logs="Traceback ...\nValueError: bad row 17\n")
    launcher, _ = _launcher(cluster)  # cleanup on-success: keep it for inspection
    with pytest.raises(JobFailed) as err:
        launcher.run(_job())
    text = str(err.value)
    assert "Failed/FAILED (AppFailed)" in text
    assert "exit code 2" in text
    assert "ValueError: bad row 17" in text
    assert cluster.deleted == []


def test_active_deadline_exceeded_is_a_failure(schemas):
    cluster = FakeCluster(DEADLINE, schemas)
    launcher, _ = _launcher(cluster, cleanup="always")
    with pytest.raises(JobFailed, match="DeadlineExceeded") as err:
        launcher.run(_job())
    assert "activeDeadlineSeconds" in str(err.value)
    assert cluster.deleted == ["ray-app-train-abc"]


def test_our_own_timeout_stops_polling_and_deletes(schemas):
    stuck = [{"jobDeploymentStatus": "Initializing"}]  # e.g. pods unschedulable
    cluster = FakeCluster(stuck, schemas)
    launcher, _ = _launcher(cluster)
    with pytest.raises(JobFailed, match=r"no result after 60 s.*Initializing"):
        launcher.run(_job())
    assert cluster.polls == 13  # t = 0, 5, ..., 60
    assert cluster.deleted == ["ray-app-train-abc"]


def test_retrying_is_not_terminal(schemas):
    cluster = FakeCluster(RETRIED, schemas)
    launcher, _ = _launcher(cluster)
    assert launcher.run(_job()).result == RESULT


def test_complete_without_succeeded_is_a_failure(schemas):
    stopped = [{"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}]
    launcher, _ = _launcher(FakeCluster(stopped, schemas))
    with pytest.raises(JobFailed, match="Complete/STOPPED"):
        launcher.run(_job())


def test_success_without_a_result_line_is_a_failure(schemas):
    launcher, _ = _launcher(FakeCluster(SUCCESS, schemas, logs="done\n"))
    with pytest.raises(JobFailed, match="no JSON result"):
        launcher.run(_job())


def test_an_invalid_manifest_is_refused_like_the_api_server_would(schemas):
    job = _job()
    job["spec"]["backoffLimits"] = 3
    launcher, _ = _launcher(FakeCluster(SUCCESS, schemas))
    with pytest.raises(ValueError, match="backoffLimits"):
        launcher.run(job)


def test_reuse_cluster_uses_a_cluster_selector(schemas):
    job = kuberay.rayjob("train", name="x", reuse_cluster="ray-app")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "ray-app"}
    assert "rayClusterSpec" not in job["spec"]
    assert validate_ray_object(job, schemas) == []


def test_deploy_waits_for_ready_on_the_new_generation(schemas):
    service = [
        {"observedGeneration": 7, "conditions": [{"type": "Ready", "status": "True"}]},
        {"observedGeneration": 8, "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "True"}]},
        {"observedGeneration": 8, "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "False"}]},
    ]  # fmt: skip
    cluster = FakeCluster([], schemas, service_statuses=service)
    launcher, _ = _launcher(cluster)
    assert launcher.deploy("applications: []\n") == {
        "service": "ray-app/adult-income",
        "generation": 8,
    }
    assert cluster.polls == 3
    assert cluster.patched == {"spec": {"serveConfigV2": "applications: []\n"}}


def test_deploy_times_out_with_the_ready_condition_reason(schemas):
    service = [{"observedGeneration": 8, "conditions": [
        {"type": "Ready", "status": "False", "reason": "ServeDeploymentsUnhealthy"}]}]  # fmt: skip
    launcher, _ = _launcher(FakeCluster([], schemas, service_statuses=service))
    with pytest.raises(JobFailed, match="ServeDeploymentsUnhealthy"):
        launcher.deploy("applications: []\n", ready_timeout_s=30)


def test_parse_result_takes_the_last_json_object_line():
    assert parse_result('{"a": 1}\nnoise {x}\n{"b": 2}\ntrailer\n') == {"b": 2}
    with pytest.raises(JobFailed):
        parse_result("[1, 2]\nnothing\n")


def test_launch_config_rejects_unknown_backends():
    with pytest.raises(ValueError):
        LaunchConfig(backend="slurm")  # type: ignore[arg-type]


def test_crd_folder_missing_is_a_clear_error(tmp_path: Path):
    from ray_app.errors import UserError

    with pytest.raises(UserError, match="RAY_APP_KUBERAY_CRDS"):
        load_crd_schemas(tmp_path)
