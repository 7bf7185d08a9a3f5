"""The KubeRay launcher against a fake API that runs KubeRay v1.7's own state machines.

tests/kuberay_fake.py derives the RayJob and RayService sequences from the operator's source
(rayjob_controller.go, rayservice_controller.go at v1.7.0) and runs our port of its admission
rules; nothing here lists the statuses by hand, so the launcher meets what the operator would
write, in the order and timing (requeue periods) it would write it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from ray_app.core.config import AppConfig, LaunchConfig, ServeConfig
from ray_app.platform import manifests as kuberay
from ray_app.platform.kubecheck import load_crd_schemas, render_overlay
from ray_app.platform.launch import Job, JobFailed
from ray_app.platform.launch.base import parse_result
from ray_app.platform.launch.kuberay import KubeRayJobs, build_rayjob
from ray_app.serving.config import serve_config
from tests.fakes.kuberay import Clock, FakeKubeRay, JobScript
from tests.support.samples import CRDS, KUBERAY

RESULT = {"test_accuracy": 0.87, "model_version": 3}
LOGS = "INFO job started\nepoch 1 ...\n" + json.dumps(RESULT) + "\n------\nJob succeeded\n"
FAILED_LOGS = "Traceback ...\nValueError: bad row 17\n"


@pytest.fixture(scope="module")
def schemas():
    return load_crd_schemas(CRDS)


@pytest.fixture(scope="module")
def gke_gpu() -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o
            for o in render_overlay(KUBERAY / "overlays" / "gke-gpu")}  # fmt: skip


def _launcher(fake: FakeKubeRay, clock: Clock, **cfg: Any) -> tuple[KubeRayJobs, list[str]]:
    lines: list[str] = []
    launch = LaunchConfig(**{"poll_s": 5, "timeout_s": 600, **cfg})
    service = launch.service

    def http_get(url: str) -> dict:
        assert url == f"{launch.serve_url}/health"
        return fake.served(service)

    app = AppConfig(launch=launch)
    return KubeRayJobs(fake, fake, app, lines.append, clock, clock.sleep, http_get), lines


def _job(cfg: LaunchConfig | None = None, name: str = "ray-app-train-abc") -> dict:
    return build_rayjob(Job("train", ["--epochs", "2"], name),
                        AppConfig(launch=cfg or LaunchConfig()), None)  # fmt: skip


def _states(lines: list[str]) -> list[str]:
    return [ln.split(": ", 1)[1] for ln in lines if ln.startswith("RayJob ray-app/")]


# --- RayJob -----------------------------------------------------------------------------------


def test_success_returns_the_json_result_and_cleans_up(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(20, [(60, "SUCCEEDED", LOGS)])})
    launcher, lines = _launcher(fake, clock)
    outcome = launcher.run_manifest(_job())
    assert outcome.result == RESULT
    assert outcome.status == "Complete/SUCCEEDED"
    assert fake.deleted == ["ray-app-train-abc"]
    # Each state once, in the operator's order (PENDING may pass between two polls).
    states = [s for s in _states(lines) if s != "Running/PENDING"]
    assert states == ["Initializing/-", "Running/RUNNING", "Complete/SUCCEEDED"]


def test_cluster_selector_with_backoff_limit_is_validation_failed_at_once(schemas):
    """The bug a first deployment hit: KubeRay refuses backoffLimit with clusterSelector
    (validation.go L575-L577) and never reconciles the RayJob again."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(20, [(60, "SUCCEEDED", LOGS)])})
    launcher, lines = _launcher(fake, clock)
    bad = _job(LaunchConfig(reuse_cluster="ray-app"))
    bad["spec"]["backoffLimit"] = 1  # what kuberay.rayjob used to set
    with pytest.raises(JobFailed) as err:
        launcher.run_manifest(bad)
    text = str(err.value)
    assert "ValidationFailed/- (ValidationFailed)" in text
    assert "BackoffLimit is incompatible with ClusterSelector mode" in text
    assert clock.now <= 5  # failed on the first poll, not at our 600 s timeout
    assert _states(lines) == ["ValidationFailed/-"]


def test_the_launchers_own_reuse_cluster_job_is_admitted_and_runs(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(0, [(30, "SUCCEEDED", LOGS)])})
    launcher, _ = _launcher(fake, clock, reuse_cluster="ray-app")
    job = _job(LaunchConfig(reuse_cluster="ray-app"))
    assert "backoffLimit" not in job["spec"] and "rayClusterSpec" not in job["spec"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "ray-app"}
    assert launcher.run_manifest(job).result == RESULT


def test_a_failed_attempt_is_retried_by_the_operator(schemas):
    attempts = [(30, "FAILED", FAILED_LOGS), (30, "SUCCEEDED", LOGS)]
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, attempts)})
    launcher, lines = _launcher(fake, clock, cleanup="never")
    assert launcher.run_manifest(_job()).result == RESULT
    states = _states(lines)
    # backoffLimit 1: one retry (L542-L556), a new cluster (Retrying -> New -> Initializing).
    assert states.count("Initializing/-") == 2
    assert states[-1] == "Complete/SUCCEEDED"
    assert fake.jobs["ray-app-train-abc"].obj["status"]["failed"] == 1


def test_retries_exhausted_surface_reason_message_and_the_newest_logs(schemas):
    attempts = [(30, "FAILED", "first attempt\n"), (30, "FAILED", FAILED_LOGS)]
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, attempts)})
    launcher, _ = _launcher(fake, clock)  # cleanup on-success: keep it for inspection
    with pytest.raises(JobFailed) as err:
        launcher.run_manifest(_job())
    text = str(err.value)
    assert "Failed/FAILED (AppFailed)" in text
    assert "exit code 1" in text
    assert "ValueError: bad row 17" in text and "first attempt" not in text
    assert fake.deleted == []


def test_active_deadline_exceeded_fails_without_retry(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, [(10_000, "SUCCEEDED", LOGS)])})
    launcher, lines = _launcher(fake, clock, cleanup="always", timeout_s=7200)
    with pytest.raises(JobFailed, match="DeadlineExceeded") as err:
        launcher.run_manifest(_job())
    assert "activeDeadlineSeconds" in str(err.value)
    assert not any(s.startswith("Retrying") for s in _states(lines))  # L543-L551
    assert kuberay.DEADLINES["train"] <= clock.now < kuberay.DEADLINES["train"] + 10
    assert fake.deleted == ["ray-app-train-abc"]


def test_our_own_timeout_stops_polling_and_deletes(schemas):
    clock = Clock()  # the cluster never becomes ready (pods unschedulable)
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10**9, [(1, "SUCCEEDED", LOGS)])})
    launcher, _ = _launcher(fake, clock, timeout_s=60)
    with pytest.raises(JobFailed, match=r"no result after 60 s.*Initializing"):
        launcher.run_manifest(_job())
    assert fake.deleted == ["ray-app-train-abc"]


def test_an_api_error_while_polling_deletes_the_job_it_gave_up_on(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, [(60, "SUCCEEDED", LOGS)])})
    fake.fail_next_get = ApiException(status=503, reason="Service Unavailable")
    launcher, _ = _launcher(fake, clock)  # on-success: but this job may still be running
    with pytest.raises(ApiException):
        launcher.run_manifest(_job())
    assert fake.deleted == ["ray-app-train-abc"]
    launcher, _ = _launcher(fake, clock, cleanup="never")
    fake.fail_next_get = ApiException(status=503, reason="Service Unavailable")
    with pytest.raises(ApiException):
        launcher.run_manifest(_job(name="ray-app-train-def"))
    assert fake.deleted == ["ray-app-train-abc"]


def test_complete_without_succeeded_is_a_failure(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(0, [(5, "STOPPED", "stopped\n")])})
    launcher, _ = _launcher(fake, clock)
    with pytest.raises(JobFailed, match="Complete/STOPPED"):
        launcher.run_manifest(_job())


def test_success_without_a_result_line_is_a_failure(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(0, [(5, "SUCCEEDED", "done\n")])})
    launcher, _ = _launcher(fake, clock)
    with pytest.raises(JobFailed, match="no JSON result"):
        launcher.run_manifest(_job())


def test_an_invalid_manifest_is_refused_by_the_api_server(schemas):
    job = _job()
    job["spec"]["backoffLimits"] = 3
    clock = Clock()
    launcher, _ = _launcher(FakeKubeRay(schemas, clock), clock)
    with pytest.raises(ApiException, match="backoffLimits"):
        launcher.run_manifest(job)


def test_jobs_take_the_deployed_overlays_cluster_spec(schemas, gke_gpu):
    """Sizes, the GPU group and the image come from the overlay the user applied."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(0, [(5, "SUCCEEDED", LOGS)])})
    fake.templates["ray-app-train"] = gke_gpu["RayJob/ray-app-train"]
    launcher, lines = _launcher(fake, clock, image="registry.example/other:9")
    launcher.run(Job("train", ["--use-gpu"], "ray-app-train-gpu"))
    created = fake.created[-1]
    template = gke_gpu["RayJob/ray-app-train"]["spec"]["rayClusterSpec"]
    assert created["spec"]["rayClusterSpec"] == template
    groups = [g["groupName"] for g in created["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    assert groups == ["cpu", "gpu"]
    assert "suspend" not in created["spec"]  # the template is suspended, its copies are not
    assert created["spec"]["entrypoint"] == "ray-app train --json --use-gpu"
    assert any("cluster spec from RayJob ray-app/ray-app-train" in ln for ln in lines)
    # No template deployed: the generated cluster, with the configured image.
    launcher.run(Job("tune", [], "ray-app-tune-x"))
    images = {c["image"] for g in fake.created[-1]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
              for c in g["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {"registry.example/other:9"}


def test_parse_result_takes_the_last_json_object_line():
    assert parse_result('{"a": 1}\nnoise {x}\n{"b": 2}\ntrailer\n') == {"b": 2}
    with pytest.raises(JobFailed):
        parse_result("[1, 2]\nnothing\n")


def test_launch_config_rejects_unknown_backends():
    with pytest.raises(ValueError):
        LaunchConfig(backend="slurm")  # type: ignore[arg-type]


def test_crd_folder_missing_is_a_clear_error(tmp_path: Path):
    from ray_app.core.errors import UserError

    with pytest.raises(UserError, match="RAY_APP_KUBERAY_CRDS"):
        load_crd_schemas(tmp_path)


# --- RayService: cold start, in-place updates, NewCluster upgrades, one field manager -------


def _service_doc(version: str | None) -> str:
    uri = f"models:/adult-income/{version}" if version else "models:/adult-income@champion"
    return yaml.safe_dump(serve_config(ServeConfig(model_uri=uri)), sort_keys=False)


def _release_apply(fake: FakeKubeRay, overlay: str = "local", **spec_changes: Any) -> dict:
    """What the release job does: kubectl apply --server-side --field-manager=ray-app."""
    service = next(o for o in render_overlay(KUBERAY / "overlays" / overlay)
                   if o["kind"] == "RayService")  # fmt: skip
    service["spec"].update(spec_changes)
    return fake.apply(service, manager=kuberay.FIELD_MANAGER)


def _wait_ready(fake: FakeKubeRay, clock: Clock, limit_s: float = 300) -> dict:
    """kubectl wait --for=condition=Ready rayservice/adult-income."""
    while clock.now < limit_s:
        obj = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices",
                                                kuberay.SERVICE_NAME)  # fmt: skip
        ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
        if ready["status"] == "True":
            return obj
        clock.sleep(5)
    raise AssertionError(f"not Ready after {limit_s} s: {obj['status']}")


def test_cold_start_is_ready_without_a_model_and_serves_the_first_champion(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)  # an empty registry: no champion
    _release_apply(fake)
    obj = _wait_ready(fake, clock)  # the release's `kubectl wait` does not wedge
    app = obj["status"]["activeServiceStatus"]["applicationStatuses"]["adult-income"]
    assert app["status"] == "RUNNING"
    assert fake.served(kuberay.SERVICE_NAME) == {"status": "no-model", "model_version": None}
    fake.registry["champion"] = "1"  # the first training registers v1 as champion
    clock.sleep(4)
    fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices", "adult-income")
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "1"  # no manual step


def test_deploy_waits_for_the_new_config_not_the_stale_running_status(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    _release_apply(fake)
    _wait_ready(fake, clock)
    launcher, _ = _launcher(fake, clock)
    start = clock.now
    result = launcher.deploy("2")
    assert result["model_version"] == "2" and result["generation"] == 2
    # The first poll after the change saw generation 2 observed, Ready and RUNNING (the old
    # config's status): returning then would have reported v2 while v1 served.
    assert clock.now - start >= fake.deploy_s
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "2"
    call = fake.api_client.calls[-1]
    assert call["params"] == {"fieldManager": "ray-app", "force": "true"}
    assert set(call["body"]["spec"]) == {"serveConfigV2"}  # it owns this one field only


def test_a_failed_in_place_update_is_reported_while_the_old_version_serves(schemas):
    def outcome(config: str) -> tuple[str, str]:
        if "model_version: '99'" in config:
            return "DEPLOY_FAILED", "RuntimeError: models:/adult-income/99 not found"
        return "RUNNING", ""

    clock = Clock()
    fake = FakeKubeRay(schemas, clock, serve_outcome=outcome)
    fake.registry["champion"] = "1"
    _release_apply(fake)
    _wait_ready(fake, clock)
    launcher, _ = _launcher(fake, clock)
    with pytest.raises(JobFailed, match=r"DEPLOY_FAILED: RuntimeError: .*99 not found"):
        launcher.deploy("99")
    obj = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices",
                                            "adult-income")  # fmt: skip
    ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"  # KubeRay's Ready alone would have called this a success
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "1"


def test_deploy_during_a_new_cluster_upgrade_waits_for_the_promotion(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    _release_apply(fake)
    _wait_ready(fake, clock)
    # A release changes the cluster spec (a new image): KubeRay prepares a pending cluster.
    new_image = _release_apply(fake)["spec"]["rayClusterConfig"]
    for group in [new_image["headGroupSpec"], *new_image["workerGroupSpecs"]]:
        group["template"]["spec"]["containers"][0]["image"] = "ray-app:0.1.1"
    fake.apply({"apiVersion": "ray.io/v1", "kind": "RayService",
                "metadata": {"name": "adult-income"},
                "spec": {"rayClusterConfig": new_image}}, manager="ray-app")  # fmt: skip
    launcher, _ = _launcher(fake, clock)
    start = clock.now
    assert launcher.deploy("2")["model_version"] == "2"
    assert clock.now - start >= fake.cluster_ready_s  # not before the new cluster took over
    status = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices",
                                               "adult-income")["status"]  # fmt: skip
    assert {c["type"]: c["status"] for c in status["conditions"]}["UpgradeInProgress"] == "False"


def test_validation_failed_rayservice_fails_deploy_at_once(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    _release_apply(fake)
    _wait_ready(fake, clock)
    bad = _release_apply(fake)["spec"]["rayClusterConfig"]
    bad["headGroupSpec"]["template"]["spec"]["restartPolicy"] = "Always"  # autoscaler v2 rule
    fake.apply({"apiVersion": "ray.io/v1", "kind": "RayService",
                "metadata": {"name": "adult-income"},
                "spec": {"rayClusterConfig": bad}}, manager="ray-app")  # fmt: skip
    launcher, _ = _launcher(fake, clock)
    with pytest.raises(JobFailed, match="ValidationFailed: restartPolicy for head Pod"):
        launcher.deploy("2")
    assert clock.now < 60


def test_one_field_manager_keeps_release_and_pipeline_from_conflicting(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    _release_apply(fake)
    _wait_ready(fake, clock)
    launcher, _ = _launcher(fake, clock)
    launcher.deploy("2")  # the pipeline pins v2 (it became champion)
    fake.registry["champion"] = "2"
    # The next release re-applies the whole object, serveConfigV2 with the alias: no conflict,
    # and the alias resolves to the same champion, so the served model does not go back.
    _release_apply(fake)
    for _ in range(20):
        clock.sleep(5)
        fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices",
                                          "adult-income")  # fmt: skip
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "2"
    assert fake.managers[("rayservices", "adult-income")]["spec.serveConfigV2"] == "ray-app"
    # A second manager (what the old client-side `kubectl apply` and the Python client's
    # merge patch were) conflicts instead of silently taking the field.
    with pytest.raises(ApiException, match="conflicts"):
        fake.apply({"apiVersion": "ray.io/v1", "kind": "RayService",
                    "metadata": {"name": "adult-income"},
                    "spec": {"serveConfigV2": _service_doc("1")}}, manager="kubectl")  # fmt: skip
