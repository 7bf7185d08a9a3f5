"""The fake Kubernetes API + KubeRay operator (tests/fakes/kuberay.py) against the real ones.

Each test names what it models: the Kubernetes docs ("[doc: <page>, <section>]": Server-Side
Apply https://kubernetes.io/docs/reference/using-api/server-side-apply/, Custom Resources
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/)
or KubeRay v1.7.0's source (commit 59d663ae, ray-operator/controllers/ray/: "job L<n>" =
rayjob_controller.go, "svc L<n>" = rayservice_controller.go). The CRDs are KubeRay's own files;
the RayService is the one `kubectl kustomize kuberay/overlays/local` renders. Pure Python.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.fakes import ssa
from tests.fakes.kuberay import (
    DEFAULT_CLIENT_MANAGER,
    Attempt,
    Clock,
    FakeKubeRay,
    JobScript,
    _ts,
    cluster_hash,
)

REPO = Path(__file__).resolve().parents[3]
CRDS = Path("/work/shared/kuberay/crds")
KUBECTL = REPO / ".venv" / "bin" / "kubectl"
NS = "ray-app"
G, V = "ray.io", "v1"
LOGS = 'epoch 1\n{"test_accuracy": 0.87}\n'


@functools.lru_cache(maxsize=1)
def _overlay_rayservice() -> dict:
    """The local overlay's RayService, with the committed Serve config as its serveConfigV2:
    the whole object, as one applier would send it (the overlays leave serveConfigV2 to the
    deploy step; these tests need a complete RayService)."""
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(REPO / "kuberay" / "overlays" / "local")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    service = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "RayService")
    serve = yaml.safe_load((REPO / "kuberay" / "serve-config.yaml").read_text())
    service["spec"]["serveConfigV2"] = yaml.safe_dump(serve, sort_keys=False)
    return service


def _release() -> dict:
    return copy.deepcopy(_overlay_rayservice())


def _serve_doc(version: str) -> str:
    """The overlay's serveConfigV2 with the model pinned, as a deploy writes it."""
    doc = yaml.safe_load(_overlay_rayservice()["spec"]["serveConfigV2"])
    doc["applications"][0]["deployments"][0]["user_config"] = {"model_version": version}
    return yaml.safe_dump(doc, sort_keys=False)


def _deploy_body(version: str) -> dict:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "RayService",
        "metadata": {"name": "adult-income", "namespace": NS},
        "spec": {"serveConfigV2": _serve_doc(version)},
    }


def _rayjob(name: str = "job-a", **spec: Any) -> dict:
    head = {
        "rayStartParams": {},
        "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray:2.60.0"}]}},
    }
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "entrypoint": "python train.py",
            "shutdownAfterJobFinishes": True,
            "rayClusterSpec": {"rayVersion": "2.60.0", "headGroupSpec": head},
            **spec,
        },
    }


def _get(fake: FakeKubeRay, plural: str, name: str) -> dict:
    return fake.get_namespaced_custom_object(G, V, NS, plural, name)


def _job_states(fake: FakeKubeRay, clock: Clock, name: str, until: float) -> list[tuple]:
    """(time, jobDeploymentStatus, jobStatus, reason) at every change, polled each second."""
    seen: list[tuple] = []
    while clock.now <= until:
        st = _get(fake, "rayjobs", name).get("status") or {}
        key = (st.get("jobDeploymentStatus", ""), st.get("jobStatus", ""), st.get("reason", ""))
        if not seen or seen[-1][1:] != key:
            seen.append((clock.now, *key))
        clock.sleep(1)
    return seen


def _conditions(obj: dict) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (obj.get("status") or {}).get("conditions", [])
    }


def _until_ready(fake: FakeKubeRay, clock: Clock, limit: float = 300) -> dict:
    while clock.now < limit:
        obj = _get(fake, "rayservices", "adult-income")
        if _conditions(obj).get("Ready", ("",))[0] == "True":
            return obj
        clock.sleep(1)
    raise AssertionError("the RayService never became Ready")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeKubeRay:
    f = FakeKubeRay(CRDS, clock)
    f.registry["champion"] = "1"
    return f


# ============================================================================ API server


def test_create_is_an_update_by_the_clients_field_manager(fake):
    """[doc: Server-Side Apply, "Comparison with Update"]: a POST is an Update by its field
    manager, which owns every field it set; [doc: Custom Resources, "Defaulting"]: the CRD's
    defaults (spec.submissionMode, backoffLimit, ttlSecondsAfterFinished) are filled in before
    field management, so the creator owns them too; status is a subresource, dropped on create."""
    body = _rayjob()
    body["status"] = {"jobDeploymentStatus": "Complete"}
    out = fake.create_namespaced_custom_object(G, V, NS, "rayjobs", body)
    assert [(m["manager"], m["operation"]) for m in out["metadata"]["managedFields"]] == [
        (DEFAULT_CLIENT_MANAGER, "Update")
    ]
    owned = ssa.owned(out, DEFAULT_CLIENT_MANAGER, "Update")
    assert {".spec.entrypoint", ".spec.submissionMode", ".spec.backoffLimit"} <= owned
    assert out["spec"]["submissionMode"] == "K8sJobMode" and out["spec"]["backoffLimit"] == 0
    assert "status" not in out and fake.created == [body]  # .created: what the client sent
    assert (out["metadata"]["generation"], out["metadata"]["resourceVersion"]) == (1, "1")
    other = fake.create_namespaced_custom_object(
        G, V, NS, "rayjobs", _rayjob("job-b"), field_manager="launcher"
    )
    assert other["metadata"]["managedFields"][0]["manager"] == "launcher"


def test_taken_names_are_409_already_exists_and_missing_objects_404(fake):
    """API Concepts: POST of an existing name is 409 AlreadyExists; GET, PATCH and DELETE of a
    missing object are 404 NotFound (metav1.Status bodies)."""
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob())
    with pytest.raises(ApiException) as err:
        fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob())
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
    for call in (
        lambda: _get(fake, "rayjobs", "nope"),
        lambda: fake.patch_namespaced_custom_object(G, V, NS, "rayjobs", "nope", {"spec": {}}),
        lambda: fake.delete_namespaced_custom_object(G, V, NS, "rayjobs", "nope"),
    ):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 404 and json.loads(err.value.body)["reason"] == "NotFound"


def test_a_write_the_schema_refuses_is_422_and_stores_nothing(fake):
    """[doc: Custom Resources, "Validation"]: after the write is computed, the object is
    validated against the CRD's openAPIV3Schema (type, enum, minimum, required); a failure is
    422 Invalid and the stored object is unchanged."""
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob())
    before = _get(fake, "rayjobs", "job-a")  # after the operator's first writes
    bad = [
        ({"spec": {"backoffLimit": "three"}}, "spec.backoffLimit in body must be of type integer"),
        ({"spec": {"preRunningDeadlineSeconds": 0}}, "should be greater than or equal to 1"),
        (
            {"spec": {"rayClusterSpec": {"autoscalerOptions": {"version": "v3"}}}},
            'spec.rayClusterSpec.autoscalerOptions.version: Unsupported value: "v3"',
        ),
        (
            {"spec": {"rayClusterSpec": {"headGroupSpec": None}}},
            "spec.rayClusterSpec.headGroupSpec: Required value",
        ),
    ]
    for patch, message in bad:
        with pytest.raises(ApiException) as err:
            fake.patch_namespaced_custom_object(G, V, NS, "rayjobs", "job-a", patch)
        assert err.value.status == 422 and message in json.loads(err.value.body)["message"]
    assert _get(fake, "rayjobs", "job-a") == before


def test_undeclared_fields_are_pruned_with_a_warning_or_refused_when_strict(fake):
    """[doc: Custom Resources, "Field pruning"] and API Concepts "Setting the field validation
    level": without fieldValidation (Warn) unknown fields are dropped with a warning; Strict
    refuses them (400)."""
    body = _rayjob()
    body["spec"]["backoffLimits"] = 3
    out = fake.create_namespaced_custom_object(G, V, NS, "rayjobs", body)
    assert "backoffLimits" not in out["spec"] and fake.warnings == [
        'unknown field "spec.backoffLimits"'
    ]
    with pytest.raises(ApiException) as err:
        fake.create_namespaced_custom_object(
            G, V, NS, "rayjobs", {**body, "metadata": {"name": "job-b"}}, field_validation="Strict"
        )
    assert err.value.status == 400 and 'unknown field \\"spec.backoffLimits\\"' in err.value.body


def test_generation_counts_spec_changes_resource_version_counts_writes(fake, clock):
    """API Concepts: metadata.generation is bumped by spec changes only (a CRD with a status
    subresource: everything but metadata and status); resourceVersion changes with every write,
    the operator's status writes included; a no-op apply writes nothing."""
    release = _release()
    fake.apply(release, "ray-app")
    rv = int(
        _get(fake, "rayservices", "adult-income")["metadata"]["resourceVersion"]
    )  # + the finalizer
    again = fake.apply(release, "ray-app")
    assert again["metadata"]["resourceVersion"] == str(rv)  # identical: a no-op
    release["metadata"]["labels"]["tier"] = "web"
    labelled = fake.apply(release, "ray-app")
    assert (
        labelled["metadata"]["generation"] == 1
        and int(labelled["metadata"]["resourceVersion"]) > rv
    )
    release["spec"]["serveConfigV2"] = _serve_doc("7")
    changed = fake.apply(release, "ray-app")
    assert changed["metadata"]["generation"] == 2
    now = _get(fake, "rayservices", "adult-income")
    # calculateStatus sets observedGeneration on every reconcile (svc L653), but the status is
    # written only when InconsistentRayServiceStatuses (consistency.go L91-L113) sees another
    # change, and while Initializing nothing else changed: it stays 1 for now.
    assert now["status"]["observedGeneration"] == 1
    ready = _until_ready(fake, clock)
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"] == 2
    assert int(ready["metadata"]["resourceVersion"]) > int(changed["metadata"]["resourceVersion"])


def test_apply_through_call_api_is_the_request_the_launcher_sends(fake):
    """[doc: Server-Side Apply, "Field management"]: PATCH with Content-Type
    application/apply-patch+yaml, fieldManager required; the fake records each call."""
    fake.apply(_release(), "ray-app")
    out = fake.api_client.call_api(
        "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
        "PATCH",
        {
            "group": G,
            "version": V,
            "namespace": NS,
            "plural": "rayservices",
            "name": "adult-income",
        },
        [("fieldManager", "ray-app-deploy"), ("force", "true")],
        {"Accept": "application/json", "Content-Type": "application/apply-patch+yaml"},
        body=_deploy_body("2"),
        response_type="object",
        _return_http_data_only=True,
    )
    assert out["metadata"]["generation"] == 2
    assert fake.api_client.calls[-1]["params"] == {
        "fieldManager": "ray-app-deploy",
        "force": "true",
    }
    with pytest.raises(ApiException) as err:
        fake.api_client.call_api(
            "/x",
            "PATCH",
            {"name": "adult-income"},
            [],
            {"Content-Type": "application/apply-patch+yaml"},
            body=_deploy_body("3"),
        )
    assert err.value.status == 400


def test_merge_patch_is_an_update_that_takes_what_it_changes(fake):
    """[doc: Server-Side Apply, "Comparison with Update"]: a merge patch is an Update; the field
    it changed moves to its manager, so an applier that still sets another value conflicts;
    [doc: "Conflicts"]: 409 naming the other manager, unless forced."""
    fake.apply(_release(), "ray-app")
    patched = fake.patch_namespaced_custom_object(
        G,
        V,
        NS,
        "rayservices",
        "adult-income",
        {"spec": {"serveConfigV2": _serve_doc("5")}},
        field_manager="kubectl-edit",
    )
    assert ssa.owners(patched, ("spec", "serveConfigV2")) == {"kubectl-edit"}
    with pytest.raises(ApiException) as err:
        fake.apply(_release(), "ray-app")
    assert err.value.status == 409
    assert 'conflict with "kubectl-edit" using ray.io/v1' in json.loads(err.value.body)["message"]
    forced = fake.apply(_release(), "ray-app", force=True)
    assert ssa.owners(forced, ("spec", "serveConfigV2")) == {"ray-app"}


def test_the_release_manager_applying_only_serve_config_removes_the_cluster_and_is_refused(
    fake, clock
):
    """The project's bug. The release applies the whole RayService as field manager `ray-app`;
    the deploy then applies only {spec: {serveConfigV2}} as the same manager. [doc: Server-Side
    Apply, "Field management"]: "If you remove a field from a manifest and apply that manifest,
    Server-Side Apply checks if there are any other field managers that also own the field. If
    the field is not owned by any other field managers, it is either deleted from the live
    object or reset to its default value" (SMD merge/update.go Updater.Apply -> prune). So
    spec.rayClusterConfig, upgradeStrategy and serveService go; the RayService CRD requires
    rayClusterConfig (openAPIV3Schema spec.required), and the API server answers 422."""
    fake.apply(_release(), "ray-app")
    live = _until_ready(fake, clock)
    merged = ssa.apply(
        copy.deepcopy(live), _deploy_body("2"), "ray-app", fake.kinds["rayservices"].types, True
    )
    assert sorted(merged["spec"]) == ["serveConfigV2"]  # what the API server would store
    with pytest.raises(ApiException) as err:
        fake.apply(_deploy_body("2"), "ray-app", force=True)
    assert err.value.status == 422
    assert json.loads(err.value.body)["message"] == (
        'RayService.ray.io "adult-income" is invalid: spec.rayClusterConfig: Required value'
    )
    stored = fake.services["adult-income"].obj
    assert stored["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    assert stored["spec"] == live["spec"]  # nothing was written
    clock.sleep(30)
    assert fake.served("adult-income")["model_version"] == "1"


def test_a_separate_deploy_manager_changes_serve_config_and_leaves_the_rest(fake, clock):
    """The counterpart: the deploy applies {spec: {serveConfigV2}} as `ray-app-deploy` with
    force. [doc: Server-Side Apply, "Conflicts"]: forcing makes it the field's sole manager;
    `ray-app` keeps every other field, so nothing is pruned. The next release (ray-app applying
    the whole object, serveConfigV2 included, without --force-conflicts) then conflicts with
    ray-app-deploy on that one field."""
    fake.apply(_release(), "ray-app")
    live = _until_ready(fake, clock)
    out = fake.apply(_deploy_body("2"), "ray-app-deploy", force=True)
    assert out["metadata"]["generation"] == live["metadata"]["generation"] + 1
    assert {k: v for k, v in out["spec"].items() if k != "serveConfigV2"} == {
        k: v for k, v in live["spec"].items() if k != "serveConfigV2"
    }
    assert ssa.owners(out, ("spec", "serveConfigV2")) == {"ray-app-deploy"}
    assert ssa.owners(out, ("spec", "rayClusterConfig", "rayVersion")) == {"ray-app"}
    assert ssa.owned(out, "ray-app-deploy") == {".spec.serveConfigV2"}
    for _ in range(15):
        clock.sleep(1)
        _get(fake, "rayservices", "adult-income")
    assert fake.served("adult-income")["model_version"] == "2"
    with pytest.raises(ApiException) as err:
        fake.apply(_release(), "ray-app")
    assert (
        err.value.status == 409
        and '"ray-app-deploy": .spec.serveConfigV2' in json.loads(err.value.body)["message"]
    )


# ================================================================================ RayJob


def test_rayjob_states_follow_the_operator_and_the_submitter(clock):
    """job L166-L178: Initializing at once, jobStatus "" (JobStatusNew, omitted), startTime set;
    L208-L236: Running when the cluster is ready, jobStatus still "" until GetJobInfo finds the
    submitted job (L303-L318); L336-L349: a terminal Ray job is Complete only once the submitter
    K8s Job finished (here 5 s after the Ray job, `ray job logs --follow` returning)."""
    script = JobScript(
        cluster_ready_s=20,
        attempts=[Attempt(runs_s=60, logs=LOGS)],
        submit_s=5,
        pending_s=1,
        submitter_exit_s=5,
    )
    fake = FakeKubeRay(CRDS, clock, {"*": script})
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob())
    assert _job_states(fake, clock, "job-a", 100) == [
        (0, "Initializing", "", ""),  # the create event; the finalizer and status write re-queue it
        (20, "Running", "", ""),  # the RayCluster's ready event; the submitter Job is created
        (27, "Running", "RUNNING", ""),  # submitted at 25, PENDING until 26; timers 21, 24, 27
        (87, "Running", "SUCCEEDED", ""),  # the Ray job ended at 85, the submitter has not
        (90, "Complete", "SUCCEEDED", ""),  # the submitter Job's Complete event
    ]
    obj = fake.jobs["job-a"].obj
    assert obj["status"]["startTime"] == _ts(0) and obj["status"]["endTime"] == _ts(90)
    assert obj["metadata"]["finalizers"] == ["ray.io/rayjob-finalizer"]
    assert ("kuberay-operator", "Update") in [
        (m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]
    ]
    pods = fake.list_namespaced_pod(NS, label_selector="job-name=job-a").items
    assert (
        len(pods) == 1
        and fake.read_namespaced_pod_log(pods[0].metadata.name, NS, tail_lines=50) == LOGS
    )


def test_submission_failed_is_the_submitter_job_failing_before_the_ray_job_exists(clock):
    """job L1138-L1165: the submitter Job reached its backoffLimit (submitterConfig.backoffLimit,
    default 2: L716-L721) while the Ray job never existed -> Failed/SubmissionFailed with the
    Job's condition; the Job controller retried its pod after 10 s and 20 s (3 pods)."""
    script = JobScript(
        cluster_ready_s=10, attempts=[Attempt(submission_fails=True, logs="ray: 500 error\n")]
    )
    fake = FakeKubeRay(CRDS, clock, {"*": script})
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob())
    assert _job_states(fake, clock, "job-a", 80) == [
        (0, "Initializing", "", ""),
        (10, "Running", "", ""),
        (55, "Failed", "", "SubmissionFailed"),  # pods fail at 15, 30 and 55
    ]
    status = fake.jobs["job-a"].obj["status"]
    assert status["message"] == (
        "Job submission has failed. Reason: BackoffLimitExceeded. "
        "Message: Job has reached the specified backoff limit"
    )
    pods = fake.list_namespaced_pod(NS, label_selector="job-name=job-a").items
    assert [p.metadata.creation_timestamp for p in pods] == [
        fake.list_namespaced_pod(NS, label_selector="job-name=job-a")
        .items[i]
        .metadata.creation_timestamp
        for i in range(3)
    ] and len(pods) == 3


def test_pre_running_deadline_fails_an_attempt_that_never_runs_and_is_retried(clock):
    """job L188-L190, L1247-L1261: preRunningDeadlineSeconds counts from startTime while
    Initializing -> Failed/PreRunningDeadlineExceeded; checkBackoffLimit (L542-L556) retries it
    (only DeadlineExceeded and JobStatusCheckTimeoutExceeded are final)."""
    fake = FakeKubeRay(CRDS, clock, {"*": JobScript(cluster_ready_s=10_000)})
    fake.create_namespaced_custom_object(
        G, V, NS, "rayjobs", _rayjob(preRunningDeadlineSeconds=30, backoffLimit=1)
    )
    states = _job_states(fake, clock, "job-a", 80)
    assert states[:3] == [
        (0, "Initializing", "", ""),
        (30, "Retrying", "", "PreRunningDeadlineExceeded"),
        (31, "Initializing", "", ""),  # the cluster and Job are gone 1 s later: New, then at once
    ]
    when, *rest = states[3]
    assert rest == ["Failed", "", "PreRunningDeadlineExceeded"]
    assert 31 + 30 <= when < 31 + 30 + 3  # from the new startTime, on the 3-s requeue timer
    assert fake.jobs["job-a"].obj["status"]["failed"] == 2


def test_job_status_check_timeout_when_the_dashboard_is_lost_is_not_retried(clock):
    """job L262-L264, L321-L325, L1325-L1354: GetJobInfo failing starts
    jobStatusCheckFailureStartTime; 300 s later (constant.go L290) the RayJob is
    Failed/JobStatusCheckTimeoutExceeded, which checkBackoffLimit never retries (L543)."""
    script = JobScript(
        cluster_ready_s=10, attempts=[Attempt(runs_s=10_000, dashboard_lost_after_s=20)]
    )
    fake = FakeKubeRay(CRDS, clock, {"*": script})
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob(backoffLimit=3))
    states = _job_states(fake, clock, "job-a", 400)
    when, *rest = states[-1]
    assert rest == ["Failed", "RUNNING", "JobStatusCheckTimeoutExceeded"] and 335 <= when < 338
    status = fake.jobs["job-a"].obj["status"]
    # Lost at 15 + 20 = 35, when the submitter pod's failure (a Job status event) woke the operator.
    assert status["jobStatusCheckFailureStartTime"] == _ts(35)
    assert status["failed"] == 1 and not any(s[1] == "Retrying" for s in states)


def test_each_attempt_has_its_own_start_time_so_the_active_deadline_is_per_attempt(clock):
    """job L366-L410: Retrying deletes the cluster and the submitter Job, waits until both are
    gone, resets the status to New; initRayJobStatusIfNeed (L887-L917) then sets a new
    startTime, from which activeDeadlineSeconds (L1234-L1245) counts again; only the new
    submitter Job's pods are left (background deletion, L784)."""
    attempts = [
        Attempt(runs_s=30, final="FAILED", logs="first\n"),
        Attempt(runs_s=10_000, logs="second\n"),
    ]
    fake = FakeKubeRay(CRDS, clock, {"*": JobScript(cluster_ready_s=10, attempts=attempts)})
    fake.create_namespaced_custom_object(
        G, V, NS, "rayjobs", _rayjob(activeDeadlineSeconds=200, backoffLimit=1)
    )
    states = _job_states(fake, clock, "job-a", 300)
    assert (45, "Running", "FAILED", "") in states  # the Ray job failed, the submitter not yet
    assert (46, "Retrying", "FAILED", "AppFailed") in states  # the submitter Job's Complete event
    assert (47, "Initializing", "", "") in states  # both deleted resources gone 1 s later
    when, *rest = states[-1]
    assert rest == ["Failed", "RUNNING", "DeadlineExceeded"] and 247 <= when < 250  # 47 + 200
    status = fake.jobs["job-a"].obj["status"]
    assert status["startTime"] == _ts(47) and status["failed"] == 2
    pods = fake.list_namespaced_pod(NS, label_selector="job-name=job-a").items
    assert [fake.read_namespaced_pod_log(p.metadata.name, NS) for p in pods] == ["second\n"]


def test_validation_failed_is_set_at_once_and_never_left(clock):
    """job L144-L162: validateRayJob runs before anything else (no finalizer, no cluster);
    ValidationFailed with the rule's message (validation.go L575-L577), no requeue; later
    reconciles fail the same way and change nothing."""
    fake = FakeKubeRay(CRDS, clock)
    body = _rayjob(backoffLimit=1, clusterSelector={"ray.io/cluster": "shared"})
    del body["spec"]["rayClusterSpec"]
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", body)
    assert _job_states(fake, clock, "job-a", 30) == [
        (0, "ValidationFailed", "", "ValidationFailed")
    ]
    obj = fake.jobs["job-a"].obj
    assert (
        obj["status"]["message"]
        == "The RayJob spec is invalid: BackoffLimit is incompatible with ClusterSelector mode"
    )
    assert "finalizers" not in obj["metadata"] and not fake.clusters


def test_cluster_selector_waits_for_the_named_cluster_and_leaves_it(clock):
    """job L947-L960: in clusterSelector mode the RayCluster must exist, else the reconcile
    errs and controller-runtime retries it with its exponential back-off; L208-L216: it must be
    ready; L429-L432: it is never deleted."""
    fake = FakeKubeRay(
        CRDS, clock, {"*": JobScript(attempts=[Attempt(runs_s=10)])}, cluster_ready_s=15
    )
    body = _rayjob(clusterSelector={"ray.io/cluster": "shared"})
    del body["spec"]["rayClusterSpec"]
    body["spec"].pop("shutdownAfterJobFinishes")
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", body)
    assert _job_states(fake, clock, "job-a", 40) == [(0, "Initializing", "", "")]
    cluster = {
        "apiVersion": f"{G}/{V}",
        "kind": "RayCluster",
        "metadata": {"name": "shared"},
        "spec": _rayjob()["spec"]["rayClusterSpec"],
    }
    fake.create_namespaced_custom_object(G, V, NS, "rayclusters", cluster)
    states = _job_states(fake, clock, "job-a", 120)
    running = next(when for when, phase, *_ in states if phase == "Running")
    # Ready at 41 + 15 = 56, but the RayJob does not own the cluster (no event) and its
    # reconciles have been failing since 0: controller-runtime's back-off (5 ms doubling) has
    # retries at 0.005 * (2**k - 1) s: 40.955 (no cluster yet), then 81.915.
    assert running == 82
    assert states[-1][1:] == ("Complete", "SUCCEEDED", "")
    assert _get(fake, "rayclusters", "shared")["status"] == {"state": "ready"}


def test_deleting_a_rayjob_waits_for_the_operator_to_remove_its_finalizer(clock):
    """job L112-L139: a RayJob being deleted gets its Ray job stopped and its finalizer
    removed by the operator; then it is gone, and its RayCluster with it (ownerReferences)."""
    fake = FakeKubeRay(
        CRDS, clock, {"*": JobScript(cluster_ready_s=5, attempts=[Attempt(runs_s=1000)])}
    )
    fake.create_namespaced_custom_object(G, V, NS, "rayjobs", _rayjob())
    clock.sleep(20)
    cluster = _get(fake, "rayjobs", "job-a")["status"]["rayClusterName"]
    gone = fake.delete_namespaced_custom_object(G, V, NS, "rayjobs", "job-a")
    assert gone["metadata"]["deletionTimestamp"] == _ts(20)
    with pytest.raises(ApiException):
        _get(fake, "rayjobs", "job-a")
    clock.sleep(2)
    with pytest.raises(ApiException):
        _get(fake, "rayclusters", cluster)


# ============================================================================ RayService


def test_rayservice_status_appears_after_the_finalizer_and_ready_follows_the_serve_service(
    fake, clock
):
    """svc L146-L154: the first reconcile only adds the finalizer (no status yet); L719-L743: the
    next names a pending cluster; L1215-L1219 creates it; reconcileServe submits the config once
    its head pod is ready; L284-L306 + L581-L641: when the application is RUNNING the Serve
    Service points at the cluster, which is promoted; L785-L818: Ready=True once that Service
    has a ready endpoint."""
    out = fake.apply(_release(), "ray-app")
    assert "status" not in out
    clock.sleep(1)
    obj = _get(fake, "rayservices", "adult-income")
    assert "status" not in obj and obj["metadata"]["finalizers"] == ["ray.io/rayservice-finalizer"]
    clock.sleep(1)
    obj = _get(fake, "rayservices", "adult-income")
    assert _conditions(obj) == {
        "Ready": ("False", "Initializing"),
        "UpgradeInProgress": ("False", "Initializing"),
    }
    pending = obj["status"]["pendingServiceStatus"]["rayClusterName"]
    ready = _until_ready(fake, clock)
    # created at 4, head ready at 34 (cluster_ready_s), app RUNNING at 44 (deploy_s)
    assert clock.now == 44 and ready["status"]["activeServiceStatus"]["rayClusterName"] == pending
    assert (
        ready["status"]["activeServiceStatus"]["applicationStatuses"]["adult-income"]["status"]
        == "RUNNING"
    )
    assert ready["status"]["numServeEndpoints"] == 2  # the head's proxy and the worker
    assert fake.served("adult-income") == {"status": "ready", "model_version": "1"}


def test_cluster_hash_ignores_what_autoscalers_and_kueue_change():
    """GenerateHashWithoutReplicasAndWorkersToDelete (util.go L645-L668) and
    rayClusterSpecForHashing (svc L1490-L1502) mute replicas, minReplicas, maxReplicas,
    workersToDelete, tolerations, schedulingGates, upgradeStrategy and the cluster's suspend.
    A worker group's own `suspend` is not muted in v1.7.0, nor is anything else."""
    spec = _release()["spec"]["rayClusterConfig"]
    base = cluster_hash(spec)
    muted = copy.deepcopy(spec)
    group = muted["workerGroupSpecs"][0]
    group.update(
        replicas=3, minReplicas=0, maxReplicas=9, scaleStrategy={"workersToDelete": ["w-1"]}
    )
    group["template"]["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    muted["headGroupSpec"]["template"]["spec"]["schedulingGates"] = [{"name": "kueue"}]
    muted.update(suspend=True, upgradeStrategy={"type": "Recreate"})
    assert cluster_hash(muted) == base
    for change in ({"suspend": True}, {"rayStartParams": {"num-cpus": "1"}}):
        other = copy.deepcopy(spec)
        other["workerGroupSpecs"][0].update(change)
        assert cluster_hash(other) != base


def test_a_replica_change_keeps_the_cluster_an_image_change_prepares_a_new_one(fake, clock):
    """svc L1409-L1437 (shouldPrepareNewCluster) with the hash above: a replicas change is not a
    new cluster (nor an update: L1370-L1373); an image change is: a pending cluster, the config
    deployed there, promotion when its app is RUNNING (L581-L641), and the old cluster deleted
    60 s later (svc L48, L1254-L1312)."""
    fake.apply(_release(), "ray-app")
    old = _until_ready(fake, clock)["status"]["activeServiceStatus"]["rayClusterName"]
    scaled = _release()
    scaled["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = 2
    fake.apply(scaled, "ray-app")
    clock.sleep(10)
    obj = _get(fake, "rayservices", "adult-income")
    assert "rayClusterName" not in obj["status"]["pendingServiceStatus"]
    assert _get(fake, "rayclusters", old)["spec"]["workerGroupSpecs"][0]["replicas"] == 1
    image = _release()
    for group in [
        image["spec"]["rayClusterConfig"]["headGroupSpec"],
        *image["spec"]["rayClusterConfig"]["workerGroupSpecs"],
    ]:
        group["template"]["spec"]["containers"][0]["image"] = "ray-app:0.1.1"
    fake.apply(image, "ray-app")
    clock.sleep(2)
    obj = _get(fake, "rayservices", "adult-income")
    assert _conditions(obj)["UpgradeInProgress"] == ("True", "BothActivePendingClustersExist")
    new = obj["status"]["pendingServiceStatus"]["rayClusterName"]
    while (
        _get(fake, "rayservices", "adult-income")["status"]["activeServiceStatus"]["rayClusterName"]
        != new
    ):
        assert (
            fake.served("adult-income")["model_version"] == "1"
        )  # the old cluster serves meanwhile
        clock.sleep(1)
    promoted = clock.now
    clock.sleep(60)
    assert _get(fake, "rayclusters", old)  # scheduled for deletion 60 s after it was left
    clock.sleep(4)
    with pytest.raises(ApiException):
        _get(fake, "rayclusters", old)
    assert (
        promoted - 56 >= fake.cluster_ready_s + fake.deploy_s
    )  # the new cluster started at 56 at the earliest


def test_appending_a_worker_group_updates_the_cluster_in_place(fake, clock):
    """isClusterSpecHashEqual with partial=true (svc L1379-L1407): the old groups unchanged and
    new ones appended -> shouldUpdateCluster (L1351-L1377) updates the RayCluster in place; no
    pending cluster."""
    fake.apply(_release(), "ray-app")
    active = _until_ready(fake, clock)["status"]["activeServiceStatus"]["rayClusterName"]
    more = _release()
    extra = copy.deepcopy(more["spec"]["rayClusterConfig"]["workerGroupSpecs"][0])
    extra["groupName"] = "big"
    more["spec"]["rayClusterConfig"]["workerGroupSpecs"].append(extra)
    fake.apply(more, "ray-app")
    clock.sleep(4)
    obj = _get(fake, "rayservices", "adult-income")
    assert "rayClusterName" not in obj["status"]["pendingServiceStatus"]
    cluster = _get(fake, "rayclusters", active)
    assert [g["groupName"] for g in cluster["spec"]["workerGroupSpecs"]] == ["cpu", "big"]
    assert cluster["metadata"]["annotations"]["ray.io/num-worker-groups"] == "2"


def test_upgrade_strategy_none_leaves_the_cluster_as_it_is(fake, clock):
    """isZeroDowntimeUpgradeEnabled (svc L868-L896): upgradeStrategy.type None never prepares a
    new cluster, and a non-appending change is not an in-place update either."""
    release = _release()
    release["spec"]["upgradeStrategy"] = {"type": "None"}
    fake.apply(release, "ray-app")
    active = _until_ready(fake, clock)["status"]["activeServiceStatus"]["rayClusterName"]
    release["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"
    ] = "new:1"
    fake.apply(release, "ray-app")
    clock.sleep(10)
    obj = _get(fake, "rayservices", "adult-income")
    assert obj["status"]["activeServiceStatus"]["rayClusterName"] == active
    assert "rayClusterName" not in obj["status"]["pendingServiceStatus"]
    image = _get(fake, "rayclusters", active)["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert image == "ray-app:0.1.0"


def test_the_status_written_right_after_a_config_change_is_the_old_configs(fake, clock):
    """reconcileServe (svc L2043-L2057) reads the application status, then submits the changed
    config: the reconcile the change triggers writes observedGeneration 2 with the old config's
    RUNNING; the next one (2 s later) sees DEPLOYING; deploy_s after the change, RUNNING with
    the new model."""
    fake.apply(_release(), "ray-app")
    _until_ready(fake, clock)
    fake.apply(_deploy_body("2"), "ray-app-deploy", force=True)
    first = _get(fake, "rayservices", "adult-income")["status"]
    assert first["observedGeneration"] == 2
    assert (
        first["activeServiceStatus"]["applicationStatuses"]["adult-income"]["status"] == "RUNNING"
    )
    clock.sleep(2)
    second = _get(fake, "rayservices", "adult-income")["status"]
    assert (
        second["activeServiceStatus"]["applicationStatuses"]["adult-income"]["status"]
        == "DEPLOYING"
    )
    assert fake.served("adult-income")["model_version"] == "1"
    clock.sleep(8)
    third = _get(fake, "rayservices", "adult-income")["status"]
    assert (
        third["activeServiceStatus"]["applicationStatuses"]["adult-income"]["status"] == "RUNNING"
    )
    assert fake.served("adult-income")["model_version"] == "2"


def test_ready_follows_serve_endpoints_not_the_application(clock):
    """calculateConditions (svc L785-L818): Ready is "some ready Serve endpoint". A config that
    fails to deploy leaves Ready=True (the old replicas and the proxy still answer); losing the
    cluster drops the endpoints to 0: Ready=False, ZeroServeEndpoints, and a new cluster is
    prepared (L1419-L1423)."""

    def outcome(config: str) -> tuple[str, str]:
        return ("DEPLOY_FAILED", "ValueError: no model 99") if "'99'" in config else ("RUNNING", "")

    fake = FakeKubeRay(CRDS, clock, serve_outcome=outcome)
    fake.registry["champion"] = "1"
    fake.apply(_release(), "ray-app")
    active = _until_ready(fake, clock)["status"]["activeServiceStatus"]["rayClusterName"]
    fake.apply(_deploy_body("99"), "ray-app-deploy", force=True)
    clock.sleep(12)
    obj = _get(fake, "rayservices", "adult-income")
    app = obj["status"]["activeServiceStatus"]["applicationStatuses"]["adult-income"]
    assert app == {
        "status": "DEPLOY_FAILED",
        "message": "ValueError: no model 99",
        "serveDeploymentStatuses": {
            "Api": {"status": "UNHEALTHY"},
            "Preprocess": {"status": "UNHEALTHY"},
            "Model": {"status": "UNHEALTHY"},
        },
    }
    assert _conditions(obj)["Ready"] == ("True", "NonZeroServeEndpoints")
    assert fake.served("adult-income")["model_version"] == "1"
    fake.delete_namespaced_custom_object(G, V, NS, "rayclusters", active)
    clock.sleep(4)
    obj = _get(fake, "rayservices", "adult-income")
    assert _conditions(obj)["Ready"] == ("False", "ZeroServeEndpoints")
    assert obj["status"]["pendingServiceStatus"]["rayClusterName"] not in ("", active)
    with pytest.raises(OSError):
        fake.served("adult-income")


def test_application_statuses_are_named_by_the_config(fake, clock):
    """getAndCheckServeStatus (svc L1846-L1894) records each application under the name Serve
    reports, which is the config's `applications[].name` ("default" when unnamed, constant.go
    L8) -- nothing the fake knows of its own."""
    release = _release()
    doc = yaml.safe_load(release["spec"]["serveConfigV2"])
    doc["applications"][0]["name"] = "income-v2"
    release["spec"]["serveConfigV2"] = yaml.safe_dump(doc)
    fake.apply(release, "ray-app")
    obj = _until_ready(fake, clock)
    assert list(obj["status"]["activeServiceStatus"]["applicationStatuses"]) == ["income-v2"]


def test_a_rayservice_that_fails_validation_keeps_serving_its_clusters(fake, clock):
    """svc L156-L171: validateRayService failing sets Ready=False, reason ValidationFailed, with
    the rule's message (validation.go L226-L229: restartPolicy with autoscaler v2) and returns:
    the clusters and the Serve Service are left alone."""
    fake.apply(_release(), "ray-app")
    _until_ready(fake, clock)
    bad = _release()
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] = "Always"
    fake.apply(bad, "ray-app")
    obj = _get(fake, "rayservices", "adult-income")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ValidationFailed")
    assert ready["message"] == (
        "The RayService spec is invalid: restartPolicy for head Pod should be Never or unset "
        "when using autoscaler V2"
    )
    clock.sleep(20)
    assert fake.served("adult-income")["model_version"] == "1"
