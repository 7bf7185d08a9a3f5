"""The KubeRay launcher against a fake API server that follows the real one (server-side apply
with field managers, CRD validation) and runs KubeRay v1.7's own state machines.

tests/fakes/kuberay.py derives the RayJob and RayService sequences from the operator's source
(rayjob_controller.go, rayservice_controller.go at v1.7.0), applies with tests/fakes/ssa.py
(structured-merge-diff's rules) and admits with its own port of validation.go; it imports
nothing from ray_app. Nothing here lists the statuses by hand, so the launcher meets what the
operator would write, in the order and timing (requeue periods) it would write it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from ray_app.core.config import AppConfig, LaunchConfig
from ray_app.platform import manifests as kuberay
from ray_app.platform.kubecheck import load_crd_schemas, render_overlay
from ray_app.platform.launch import Job, JobFailed
from ray_app.platform.launch.base import parse_result
from ray_app.platform.launch.kuberay import ATTEMPT_START_S, KubeRayJobs, build_rayjob, wait_limit
from ray_app.platform.pipeline.steps import step_job_name
from tests.fakes import ssa
from tests.fakes.kuberay import Clock, FakeKubeRay, JobScript
from tests.support.procs import REPO
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
    """The (jobDeploymentStatus/jobStatus) the launcher saw, in order."""
    return [ln.split(": ", 1)[1] for ln in lines
            if ln.startswith("RayJob ray-app/") and "/" in ln.split(": ", 1)[1]
            and not ln.split(": ", 1)[1].startswith(("adopting", "an earlier"))]  # fmt: skip


# --- RayJob -----------------------------------------------------------------------------------


def test_success_returns_the_json_result_and_cleans_up(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(20, [(60, "SUCCEEDED", LOGS)])})
    launcher, lines = _launcher(fake, clock)
    outcome = launcher.run_manifest(_job())
    assert outcome.result == RESULT
    assert outcome.status == "Complete/SUCCEEDED"
    assert fake.deleted == ["ray-app-train-abc"]
    # Each state once, in the operator's order (PENDING may pass between two polls); jobStatus
    # stays empty until the dashboard knows the submitted job (job L301-L326).
    states = [s for s in _states(lines) if s != "Running/PENDING"]
    assert states == ["Initializing/-", "Running/-", "Running/RUNNING", "Complete/SUCCEEDED"]


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
    """clusterSelector mode: the named RayCluster must exist (job L947-L995)."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(0, [(30, "SUCCEEDED", LOGS)])})
    cluster = next(o for o in render_overlay(KUBERAY / "overlays" / "local")
                   if o["kind"] == "RayCluster")  # fmt: skip
    fake.create_namespaced_custom_object("ray.io", "v1", "ray-app", "rayclusters", cluster)
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
    # The launcher's RayJobs are its own manager's (docs: "Who owns which field").
    live = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayjobs",
                                             "ray-app-train-abc")  # fmt: skip
    assert ssa.owners(live, ("spec", "entrypoint")) == {kuberay.LAUNCH_MANAGER}


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


def _fail_a_poll(fake: FakeKubeRay) -> None:
    """The API answers 503 to the first poll after the job exists (not to the adoption look)."""
    real, calls = fake.get_namespaced_custom_object, []

    def get(group, version, namespace, plural, name):
        calls.append(name)
        if plural == "rayjobs" and len(calls) == 2:
            raise ApiException(status=503, reason="Service Unavailable")
        return real(group, version, namespace, plural, name)

    fake.get_namespaced_custom_object = get  # type: ignore[method-assign]


def test_an_api_error_while_polling_deletes_the_job_it_gave_up_on(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, [(60, "SUCCEEDED", LOGS)])})
    _fail_a_poll(fake)
    launcher, _ = _launcher(fake, clock)  # on-success: but this job may still be running
    with pytest.raises(ApiException):
        launcher.run_manifest(_job())
    assert fake.deleted == ["ray-app-train-abc"]
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, [(60, "SUCCEEDED", LOGS)])})
    _fail_a_poll(fake)
    launcher, _ = _launcher(fake, clock, cleanup="never")
    with pytest.raises(ApiException):
        launcher.run_manifest(_job(name="ray-app-train-def"))
    assert fake.deleted == []


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
    """A value of the wrong type is a 422 from the CRD's schema (an unknown field would be
    pruned, not refused: the API server's default field validation)."""
    job = _job()
    job["spec"]["backoffLimit"] = "three"
    clock = Clock()
    launcher, _ = _launcher(FakeKubeRay(schemas, clock), clock)
    with pytest.raises(ApiException, match="backoffLimit"):
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


def test_the_wait_covers_every_attempt_the_operator_may_make(schemas):
    """KubeRay resets startTime on each retry (job L887-L917): activeDeadlineSeconds applies per
    attempt, so tune's 4 h deadline with backoffLimit 1 can run 8 h. The launcher's default
    wait covers every attempt: a first attempt that fails near its deadline and a second that
    succeeds is a success, past the 4 h the launcher used to wait."""
    tune = kuberay.rayjob("tune")
    assert wait_limit(tune, None) == 2 * (4 * 3600 + ATTEMPT_START_S) > 8 * 3600
    assert wait_limit(tune, 60) == 60  # a configured limit is the user's choice
    deadline = kuberay.DEADLINES["tune"]
    clock = Clock()
    attempts = [(deadline - 300, "FAILED", FAILED_LOGS), (3000, "SUCCEEDED", LOGS)]
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, attempts)})
    job = _job()
    job["spec"]["activeDeadlineSeconds"] = deadline
    launcher, _ = _launcher(fake, clock, timeout_s=None)
    assert launcher.run_manifest(job).result == RESULT
    assert clock.now > 4 * 3600  # where the old default wait (4 h) gave up and deleted it
    clock = Clock()  # DeadlineExceeded itself is never retried (job L543-L551): no long wait
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, [(deadline + 100, "SUCCEEDED",
                                                                LOGS)] * 2)})  # fmt: skip
    launcher, _ = _launcher(fake, clock, timeout_s=None)
    with pytest.raises(JobFailed, match="DeadlineExceeded"):
        launcher.run_manifest(job)
    assert clock.now < deadline + 600


def test_a_retried_step_adopts_the_rayjob_of_its_earlier_attempt(schemas):
    """A KFP retry reruns the step in a new pod: the RayJob's name comes from the run and the
    task, so the retry finds the job its first attempt created and waits for it instead of
    starting a second one."""
    assert step_job_name("train", "run-1", "train-op") == step_job_name("train", "run-1",
                                                                         "train-op")  # fmt: skip
    assert step_job_name("train", "run-1", "train-op") != step_job_name("train", "run-2",
                                                                         "train-op")  # fmt: skip
    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(10, [(120, "SUCCEEDED", LOGS)])})
    name = step_job_name("train", "run-1", "train-op")
    first = _job(name=name)
    fake.create_namespaced_custom_object("ray.io", "v1", "ray-app", "rayjobs", first)
    clock.sleep(60)  # the first attempt's pod dies here (node drained): its job runs on
    launcher, lines = _launcher(fake, clock)
    assert launcher.run_manifest(_job(name=name)).result == RESULT
    assert [j["metadata"]["name"] for j in fake.created] == [name]  # one RayJob, not two
    assert any("adopting the RayJob of an earlier attempt" in ln for ln in lines)


def test_a_retried_step_replaces_an_earlier_attempt_that_failed(schemas):
    clock = Clock()
    script = JobScript(10, [(30, "FAILED", FAILED_LOGS)] * 2)
    fake = FakeKubeRay(schemas, clock, {"*": script})
    launcher, lines = _launcher(fake, clock)
    with pytest.raises(JobFailed):
        launcher.run_manifest(_job())  # both operator attempts fail; kept (on-success)
    fake.scripts["*"] = JobScript(10, [(30, "SUCCEEDED", LOGS)])  # the cause is fixed
    assert launcher.run_manifest(_job()).result == RESULT
    assert any("an earlier attempt ended Failed" in ln for ln in lines)
    assert fake.deleted[0] == "ray-app-train-abc"


@pytest.mark.parametrize(("cleanup", "deleted"), [("on-success", True), ("never", False)])
def test_sigterm_to_the_step_process_deletes_its_rayjob(cleanup: str, deleted: bool):
    """A real SIGTERM to a real step process (the pod deleted, the run cancelled): Python's
    default would end it at once, leaving the RayJob running; the step turns the signal into
    an exception, so the launcher deletes (or, per `cleanup`, keeps) the job before exiting."""
    command = [sys.executable, "-m", "tests.support.sigterm_step", cleanup]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("created RayJob"):
            break
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    name = step_job_name("train", "run-1", "train-op")
    assert result["deleted"] == ([name] if deleted else [])
    assert result["running"] == ([] if deleted else [name])


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


# --- RayService: who owns which field, cold start, in-place updates, NewCluster upgrades -------


def _overlay_service(overlay: str = "local") -> dict:
    return next(o for o in render_overlay(KUBERAY / "overlays" / overlay)
                if o["kind"] == "RayService")  # fmt: skip


def _release_apply(fake: FakeKubeRay, service: dict | None = None, force: bool = False) -> dict:
    """What the release job does: `kubectl apply --server-side --field-manager=ray-app-release`
    of the rendered overlay (which leaves serveConfigV2 to the deploy step)."""
    return fake.apply(service or _overlay_service(), manager=kuberay.RELEASE_MANAGER, force=force)


def _get_service(fake: FakeKubeRay) -> dict:
    return fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices",
                                             kuberay.SERVICE_NAME)  # fmt: skip


def _ready(obj: dict) -> bool:
    conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
    return conditions.get("Ready", {}).get("status") == "True"


def _first_deployment(fake: FakeKubeRay, clock: Clock, launcher: KubeRayJobs) -> dict:
    """A first deployment: the release's fields, then the Serve config (the champion alias,
    unpinned) as the deploy step's manager; `kubectl wait --for=condition=Ready`."""
    _release_apply(fake)
    launcher.deploy(None)
    limit = clock.now + 600
    while clock.now < limit:
        obj = _get_service(fake)
        if _ready(obj):
            return obj
        clock.sleep(5)
    raise AssertionError(f"not Ready: {_get_service(fake).get('status')}")


def test_the_release_and_the_deploy_step_own_disjoint_fields(schemas):
    """[doc: Server-Side Apply, "Field management"]: the release owns every field of the
    overlay and never applies serveConfigV2; the deploy step owns serveConfigV2 alone. So a
    deploy removes nothing the release set, and the next release (without --force-conflicts)
    neither conflicts nor changes what is served."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    launcher, _ = _launcher(fake, clock)
    _first_deployment(fake, clock, launcher)
    launcher.deploy("2")  # the pipeline pins v2 (it became champion)
    fake.registry["champion"] = "2"
    live = _release_apply(fake)  # the next release: no conflict
    assert ssa.owners(live, ("spec", "serveConfigV2")) == {kuberay.DEPLOY_MANAGER}
    assert ssa.owned(live, kuberay.DEPLOY_MANAGER) == {".spec.serveConfigV2"}
    released = ssa.owned(live, kuberay.RELEASE_MANAGER)
    assert ".spec.rayClusterConfig.rayVersion" in released and ".spec.serveConfigV2" not in released
    for _ in range(20):
        clock.sleep(5)
        _get_service(fake)
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "2"


def test_the_old_single_manager_deploy_empties_the_rayservice_and_is_refused(schemas):
    """Today's bug, reproduced: the release applied the whole RayService as `ray-app` and the
    deploy step applied only serveConfigV2 as the same manager, so server-side apply removed
    every field the manager stopped applying [doc: "Field management": "If you remove a field
    from a manifest and apply that manifest, ... it is deleted"]; rayClusterConfig is required
    by the CRD: 422. The launcher's own manager leaves everything else in place."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    whole = _overlay_service()
    whole["spec"]["serveConfigV2"] = kuberay.serve_config_v2()
    fake.apply(whole, manager="ray-app")
    with pytest.raises(ApiException) as err:
        fake.apply(kuberay.serve_config_apply(kuberay.serve_config_v2()), manager="ray-app",
                   force=True)  # fmt: skip
    assert err.value.status == 422 and "rayClusterConfig" in str(err.value.body)
    launcher, _ = _launcher(fake, clock)
    launcher.deploy("3")
    kept = _get_service(fake)
    assert (
        kept["spec"]["rayClusterConfig"]
        == fake.apply.__self__._live(  # unchanged
            "rayservices", kuberay.SERVICE_NAME
        )["spec"]["rayClusterConfig"]
    )
    assert ssa.owners(kept, ("spec", "serveConfigV2")) == {kuberay.DEPLOY_MANAGER}


def test_a_persons_kubectl_patch_of_a_release_field_makes_the_next_release_conflict(schemas):
    """A merge patch is an Update: it takes ownership of what it changes without conflict
    [doc: "Conflicts": "... Update operations ... never conflict"]; the release's next apply of
    its own value then conflicts (409), and --force-conflicts takes the field back. Why the
    docs say: do not patch release fields by hand (a template RayJob: `ray-app launch`)."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    _release_apply(fake)
    fake.patch_namespaced_custom_object("ray.io", "v1", "ray-app", "rayservices",
                                        kuberay.SERVICE_NAME,
                                        {"spec": {"upgradeStrategy": {"type": "None"}}},
                                        field_manager="kubectl-patch")  # fmt: skip
    with pytest.raises(ApiException) as err:
        _release_apply(fake)
    assert err.value.status == 409 and "upgradeStrategy" in str(err.value.body)
    forced = _release_apply(fake, force=True)
    assert forced["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_the_autoscalers_replicas_make_the_clusters_release_conflict_so_it_forces(schemas):
    """RayCluster `ray-app`: workerGroupSpecs carries no x-kubernetes-list-type in the KubeRay
    v1.7.0 CRD, so it is atomic [doc: "Merge strategy": lists default to atomic]; the
    autoscaler's update of one group's replicas takes the whole list, and the release's next
    apply of the list conflicts. release.yml applies the RayCluster (only) with
    --force-conflicts: the release's spec wins, the autoscaler sets replicas again."""
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    cluster = next(o for o in render_overlay(KUBERAY / "overlays" / "gke")
                   if o["kind"] == "RayCluster")  # fmt: skip
    fake.apply(cluster, manager=kuberay.RELEASE_MANAGER)
    live = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayclusters", "ray-app")
    groups = live["spec"]["workerGroupSpecs"]
    groups[0]["replicas"] = 3  # what the autoscaler writes (an update, not an apply)
    fake.patch_namespaced_custom_object("ray.io", "v1", "ray-app", "rayclusters", "ray-app",
                                        {"spec": {"workerGroupSpecs": groups}},
                                        field_manager="autoscaler")  # fmt: skip
    live = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayclusters", "ray-app")
    assert ssa.owners(live, ("spec", "workerGroupSpecs")) == {"autoscaler"}
    with pytest.raises(ApiException) as err:
        fake.apply(cluster, manager=kuberay.RELEASE_MANAGER)
    assert err.value.status == 409 and "workerGroupSpecs" in str(err.value.body)
    forced = fake.apply(cluster, manager=kuberay.RELEASE_MANAGER, force=True)
    assert forced["spec"]["workerGroupSpecs"][0]["replicas"] == 1
    assert ssa.owners(forced, ("spec", "workerGroupSpecs")) == {kuberay.RELEASE_MANAGER}
    # The RayService's workers are not the autoscaler's: it scales the RayCluster KubeRay
    # made for the service, so the release's RayService apply never needs --force-conflicts.


def test_cold_start_is_ready_without_a_model_and_serves_the_first_champion(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)  # an empty registry: no champion
    launcher, _ = _launcher(fake, clock)
    obj = _first_deployment(fake, clock, launcher)  # the release's `kubectl wait` does not wedge
    app = obj["status"]["activeServiceStatus"]["applicationStatuses"]["adult-income"]
    assert app["status"] == "RUNNING"
    assert fake.served(kuberay.SERVICE_NAME) == {"status": "no-model", "model_version": None}
    fake.registry["champion"] = "1"  # the first training registers v1 as champion
    clock.sleep(4)
    _get_service(fake)
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "1"  # no manual step


def test_deploy_waits_for_the_new_config_not_the_stale_running_status(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    launcher, _ = _launcher(fake, clock)
    generation = _first_deployment(fake, clock, launcher)["metadata"]["generation"]
    start = clock.now
    result = launcher.deploy("2")
    assert result["model_version"] == "2" and result["generation"] == generation + 1
    # The first poll after the change saw the new generation observed, Ready and RUNNING (the
    # old config's status): returning then would have reported v2 while v1 served.
    assert clock.now - start >= fake.deploy_s
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "2"
    call = fake.api_client.calls[-1]
    assert call["params"] == {"fieldManager": kuberay.DEPLOY_MANAGER, "force": "true"}
    assert set(call["body"]["spec"]) == {"serveConfigV2"}  # it owns this one field only


def test_a_failed_in_place_update_is_reported_while_the_old_version_serves(schemas):
    def outcome(config: str) -> tuple[str, str]:
        if "model_version: '99'" in config:
            return "DEPLOY_FAILED", "RuntimeError: models:/adult-income/99 not found"
        return "RUNNING", ""

    clock = Clock()
    fake = FakeKubeRay(schemas, clock, serve_outcome=outcome)
    fake.registry["champion"] = "1"
    launcher, _ = _launcher(fake, clock)
    _first_deployment(fake, clock, launcher)
    with pytest.raises(JobFailed, match=r"DEPLOY_FAILED: RuntimeError: .*99 not found"):
        launcher.deploy("99")
    assert _ready(_get_service(fake))  # KubeRay's Ready alone would have called this a success
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "1"


def test_deploy_during_a_new_cluster_upgrade_waits_for_the_promotion(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    launcher, _ = _launcher(fake, clock)
    _first_deployment(fake, clock, launcher)
    # A release changes the cluster spec (a new image): KubeRay prepares a pending cluster.
    release = _overlay_service()
    cluster = release["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        group["template"]["spec"]["containers"][0]["image"] = "ray-app:0.1.1"
    _release_apply(fake, release)
    start = clock.now
    assert launcher.deploy("2")["model_version"] == "2"
    assert clock.now - start >= fake.cluster_ready_s  # not before the new cluster took over
    status = _get_service(fake)["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["UpgradeInProgress"] == "False"


def test_validation_failed_rayservice_fails_deploy_at_once(schemas):
    clock = Clock()
    fake = FakeKubeRay(schemas, clock)
    fake.registry["champion"] = "1"
    launcher, _ = _launcher(fake, clock)
    _first_deployment(fake, clock, launcher)
    bad = _overlay_service()
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] = (
        "Always"  # the autoscaler v2 rule (validation.go, restartPolicy for head Pod)
    )
    _release_apply(fake, bad)
    start = clock.now
    with pytest.raises(JobFailed, match=r"ValidationFailed: .*restartPolicy for head Pod"):
        launcher.deploy("2")
    assert clock.now - start < 60


def test_an_unhealthy_update_fails_the_deploy_after_settle_s_with_the_apps_message(schemas):
    """UNHEALTHY (a config whose replicas keep failing their health checks) is a failure,
    but only once it lasted `settle_s`. Regressions this catches: UNHEALTHY left out of the
    failure states (the step would wait out deploy_timeout_s, 30 min, and then blame a
    timeout), the settle time ignored (a blip fails the step) or the app's message dropped."""

    def outcome(config: str) -> tuple[str, str]:
        if "model_version: '2'" in config:
            return "UNHEALTHY", "Deployment 'Model' has 0 of 1 healthy replicas"
        return "RUNNING", ""

    clock = Clock()
    fake = FakeKubeRay(schemas, clock, serve_outcome=outcome)
    fake.registry["champion"] = "1"
    launcher, _ = _launcher(fake, clock, settle_s=60)
    _first_deployment(fake, clock, launcher)
    start = clock.now
    reason = "Deployment 'Model' has 0 of 1 healthy replicas"
    with pytest.raises(JobFailed, match=rf": Serve application adult-income UNHEALTHY: {reason}$"):
        launcher.deploy("2")
    # Not before the new config settled and stayed UNHEALTHY for settle_s; long before the
    # deploy timeout.
    assert fake.deploy_s + 60 <= clock.now - start <= fake.deploy_s + 60 + 2 * 5 + 5
    assert clock.now - start < launcher.cfg.deploy_timeout_s / 10
    assert fake.served(kuberay.SERVICE_NAME)["model_version"] == "1"  # the old one serves


class _ServeHead:
    """A Ray head's Serve REST API as LocalRayJobs calls it (PUT the config, GET the apps'
    statuses): the applications go DEPLOYING, then `final` after `deploy_s`."""

    def __init__(self, clock: Clock, final: str, message: str, deploy_s: float = 20) -> None:
        self.clock, self.final, self.message, self.deploy_s = clock, final, message, deploy_s
        self.put_at: float | None = None
        self.names: list[str] = []

    def __call__(self, method: str, path: str, body: dict | None = None) -> Any:
        assert path == "/api/serve/applications/"
        if method == "PUT":
            assert body is not None
            self.put_at, self.names = self.clock.now, [a["name"] for a in body["applications"]]
            return None
        assert method == "GET" and self.put_at is not None
        settled = self.clock.now - self.put_at >= self.deploy_s
        status = self.final if settled else "DEPLOYING"
        apps = {n: {"status": status, "message": self.message if settled else ""}
                for n in self.names}  # fmt: skip
        return {"applications": apps}


def test_local_deploy_failed_fails_the_deploy_with_the_apps_message():
    """The local backend (a laptop's Ray head): DEPLOY_FAILED stops the deploy at once with
    the application's message. Regression this catches: the DEPLOY_FAILED check dropped (or
    matched on another state): the step would poll until deploy_timeout_s, then report a
    timeout without Serve's reason."""
    from ray_app.platform.launch.local import LocalRayJobs

    clock = Clock()
    head = _ServeHead(clock, "DEPLOY_FAILED", "RuntimeError: models:/adult-income/99 not found")
    cfg = AppConfig(launch=LaunchConfig(backend="local", poll_s=5))
    launcher = LocalRayJobs(cfg, log=lambda _: None, clock=clock, sleep=clock.sleep,
                            get=lambda url: {"model_version": "1"})  # fmt: skip
    launcher._request = head  # type: ignore[method-assign]
    reason = "RuntimeError: models:/adult-income/99 not found"
    with pytest.raises(
        JobFailed, match=rf"^Serve application adult-income DEPLOY_FAILED: {reason}$"
    ):
        launcher.deploy("99")
    assert head.deploy_s <= clock.now <= head.deploy_s + 5
    # The same head, the config RUNNING and /health naming it: the deploy succeeds.
    ok = _ServeHead(clock, "RUNNING", "")
    launcher._request = ok  # type: ignore[method-assign]
    launcher.get = lambda url: {"model_version": "3"}
    assert launcher.deploy("3")["model_version"] == "3"


def test_ray_app_launch_runs_a_copy_of_the_template_and_leaves_the_release_its_fields(
    schemas, monkeypatch
):
    """`ray-app launch train` (the first deployment's training, instead of unsuspending the
    template by hand): the step's RayJob is a new object on the template's cluster spec; the
    template stays suspended and owned by the release alone, so the next release applies
    without a conflict."""
    from typer.testing import CliRunner

    from ray_app.cli.app import app
    from ray_app.platform.pipeline import steps

    clock = Clock()
    fake = FakeKubeRay(schemas, clock, {"*": JobScript(0, [(30, "SUCCEEDED", LOGS)])})
    template = next(o for o in render_overlay(KUBERAY / "overlays" / "local")
                    if o["metadata"]["name"] == "ray-app-train")  # fmt: skip
    fake.apply(template, manager=kuberay.RELEASE_MANAGER)
    seen: list[AppConfig] = []

    def launcher(cfg: AppConfig) -> KubeRayJobs:
        seen.append(cfg)
        return KubeRayJobs(fake, fake, cfg, lambda _: None, clock, clock.sleep)

    monkeypatch.setattr(steps, "_launcher", launcher)
    result = CliRunner().invoke(app, ["launch", "train", "--args", "--epochs 2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == RESULT
    assert seen[0].launch.backend == "kuberay" and seen[0].launch.namespace == "ray-app"
    created = fake.created[-1]
    assert created["metadata"]["name"].startswith("ray-app-train-")
    assert created["spec"]["entrypoint"] == "ray-app train --json --epochs 2"
    live = fake.get_namespaced_custom_object("ray.io", "v1", "ray-app", "rayjobs",
                                             "ray-app-train")  # fmt: skip
    assert created["spec"]["rayClusterSpec"] == live["spec"]["rayClusterSpec"]  # as stored
    assert live["spec"]["suspend"] is True
    assert ssa.owners(live, ("spec", "suspend")) == {kuberay.RELEASE_MANAGER}
    fake.apply(template, manager=kuberay.RELEASE_MANAGER)  # the next release: no 409
    bad = CliRunner().invoke(app, ["launch", "evaluate"])
    assert bad.exit_code != 0 and "KIND is train or tune, not 'evaluate'" in str(bad.exception)


@pytest.mark.parametrize("overlay", ["local", "gke", "gke-gpu"])
def test_the_submitter_runs_the_template_clusters_image(overlay: str):
    """On the overlay's cluster the submitter pod runs the head's image as deployed, never the
    generator's placeholder (`ray-app` names no registry: on GKE it could not be pulled)."""
    objects = render_overlay(KUBERAY / "overlays" / overlay)
    template = next(o for o in objects if o["metadata"]["name"] == "ray-app-train")
    job = build_rayjob(Job("train", [], "ray-app-train-1"), AppConfig(), template)
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (submitter,) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert submitter["image"] == head["image"] != kuberay.IMAGE
