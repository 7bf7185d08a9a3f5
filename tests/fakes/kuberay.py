"""A fake Kubernetes API with KubeRay v1.7's RayJob and RayService state machines in miniature.

It plays the API server (CRD schema validation on create/apply, server-side apply with field
managers, generation bumps on spec changes) and the operator (reconciles on a clock, as often
as its requeue period allows), following ray-project/kuberay v1.7.0:

- `rayjob_controller.go` Reconcile (L89-L462): validateRayJob first (L144-L162: the
  `kuberules` port; a violation sets ValidationFailed, never reconciled again); New ->
  Initializing (L166-L178, StartTime set); Initializing waits for the cluster, checks
  activeDeadlineSeconds (L184, L1241-L1243: Failed/DeadlineExceeded) and moves to Running
  (L236); Running reads the Ray job's status and, when terminal, becomes Complete or
  Failed/AppFailed (L331-L349); checkBackoffLimitAndUpdateStatusIfNeeded (L516-L557) turns a
  Failed job into Retrying while failed < backoffLimit + 1, except after DeadlineExceeded;
  Retrying deletes the cluster and goes back to New (L366-L410). Requeue: 3 s (L38).
- `rayservice_controller.go` Reconcile (L112-L331): validateRayService (L156-L171: Ready=False,
  reason ValidationFailed); a pending cluster when the cluster spec changes (NewCluster,
  shouldPrepareNewCluster L1409-L1437), promoted when its Serve app is ready; reconcileServe
  (L1987-L2072) reads the application status *before* it submits a changed serveConfigV2, so
  the status written right after a change still describes the old config; calculateStatus
  (L643-L783) sets observedGeneration on every reconcile and Ready = "some Serve endpoint"
  (calculateConditions L785-L817). Requeue: 2 s (L47).

What the Serve application itself does (deploying, failing, serving a version, the no-model
state on an empty registry) is scripted per test by `serve_outcome` and `registry`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from ray_app.core.constants import APP_NAME
from ray_app.platform.kubecheck import validate_ray_object
from ray_app.platform.rules import admission_errors

RAYJOB_REQUEUE_S = 3.0
RAYSERVICE_REQUEUE_S = 2.0


class Clock:
    """Shared by the fake and the launcher: time passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JobScript:
    """What the Ray side does for one RayJob: the cluster's start, each attempt's Ray job."""

    cluster_ready_s: float = 20.0
    # One entry per attempt: (seconds the Ray job runs, final jobStatus, submitter log).
    attempts: list[tuple[float, str, str]] = field(default_factory=list)


@dataclass
class _Job:
    obj: dict[str, Any]
    script: JobScript
    attempt: int = 0
    phase_since: float = 0.0
    start: float | None = None
    last: float = -1e9


@dataclass
class _Service:
    obj: dict[str, Any]
    active: dict[str, Any] | None = None  # {"hash", "config", "app", "message", "since", "version"}
    pending: dict[str, Any] | None = None
    last: float = -1e9


def _hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _model_uri(config: str) -> str:
    """What the app loads: a version pinned in a deployment's user_config (a deploy), else
    the URI of its args (an alias is resolved against the registry)."""
    app = yaml.safe_load(config)["applications"][0]
    for deployment in app.get("deployments", []):
        pinned = (deployment.get("user_config") or {}).get("model_version")
        if pinned:
            return f"models:/pinned/{pinned}"
    return str(app["args"].get("model_uri") or "")


class FakeKubeRay:
    """CustomObjectsApi + CoreV1Api + an ApiClient (for server-side apply)."""

    def __init__(
        self,
        schemas: dict,
        clock: Clock,
        scripts: dict[str, JobScript] | None = None,
        serve_outcome: Callable[[str], tuple[str, str]] | None = None,
        deploy_s: float = 10.0,
        cluster_ready_s: float = 30.0,
    ) -> None:
        self.schemas, self.clock = schemas, clock
        self.scripts = scripts or {}
        # serveConfigV2 -> (final application status, message) once its deploy is over.
        self.serve_outcome = serve_outcome or (lambda config: ("RUNNING", ""))
        self.deploy_s, self.cluster_ready_s = deploy_s, cluster_ready_s
        # What the model registry holds: alias -> version (None: an empty registry).
        self.registry: dict[str, str | None] = {"champion": None}
        self.jobs: dict[str, _Job] = {}
        self.services: dict[str, _Service] = {}
        self.managers: dict[tuple[str, str], dict[str, str]] = {}  # (plural, name) -> field->mgr
        self.deleted: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.templates: dict[str, dict[str, Any]] = {}
        self.fail_next_get: Exception | None = None
        self.api_client = _ApiClient(self)

    # --- API server ---------------------------------------------------------------------------

    def _admit(self, body: dict[str, Any]) -> None:
        errors = validate_ray_object(body, self.schemas)
        if errors:  # the API server's CRD schema check (422), before any operator sees it
            raise ApiException(status=422, reason=f"Unprocessable Entity: {errors}")

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        self._admit(body)
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=namespace, generation=1)
        name = obj["metadata"]["name"]
        self.created.append(obj)
        self.jobs[name] = _Job(obj, self.scripts.get(name) or self.scripts.get("*") or JobScript())
        return obj

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if self.fail_next_get is not None:
            exc, self.fail_next_get = self.fail_next_get, None
            raise exc
        if plural == "rayjobs":
            if name in self.templates:
                return copy.deepcopy(self.templates[name])
            if name not in self.jobs:
                raise ApiException(status=404, reason="Not Found")
            self._reconcile_job(self.jobs[name])
            return copy.deepcopy(self.jobs[name].obj)
        if plural == "rayservices":
            if name not in self.services:
                raise ApiException(status=404, reason="Not Found")
            self._reconcile_service(self.services[name])
            return copy.deepcopy(self.services[name].obj)
        raise AssertionError(plural)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def apply(self, body: dict[str, Any], manager: str, force: bool = False) -> dict[str, Any]:
        """Server-side apply (`kubectl apply --server-side`, or PATCH apply-patch+yaml)."""
        assert body["kind"] == "RayService", "this fake applies RayServices only"
        name = body["metadata"]["name"]
        owners = self.managers.setdefault(("rayservices", name), {})
        fields = [f"spec.{key}" for key in body.get("spec", {})]
        conflicts = [f for f in fields if owners.get(f, manager) != manager]
        if conflicts and not force:
            raise ApiException(status=409, reason=f"Apply failed with conflicts: {conflicts}")
        service = self.services.get(name)
        if service is None:
            self._admit(body)
            obj = copy.deepcopy(body)
            obj["metadata"]["generation"] = 1
            service = self.services[name] = _Service(obj)
        else:
            merged = copy.deepcopy(service.obj)
            merged["spec"].update(copy.deepcopy(body["spec"]))
            self._admit({k: v for k, v in merged.items() if k != "status"})
            if merged["spec"] != service.obj["spec"]:
                merged["metadata"]["generation"] += 1
            service.obj = merged
        for f in fields:
            owners[f] = manager
        # A spec change is a watch event: the operator reconciles at once.
        self._reconcile_service(service, once=True)
        return copy.deepcopy(service.obj)

    # CoreV1Api: the submitter pods of a RayJob (one per attempt, newest last)
    def list_namespaced_pod(self, namespace, label_selector):
        from datetime import datetime, timedelta
        from types import SimpleNamespace

        name = label_selector.removeprefix("job-name=")
        job = self.jobs.get(name)
        attempts = (job.attempt + 1) if job else 0
        now = datetime(2026, 11, 27, 12, 0)
        return SimpleNamespace(items=[
            SimpleNamespace(metadata=SimpleNamespace(
                name=f"{name}-{i}", creation_timestamp=now + timedelta(minutes=i)))
            for i in range(attempts)
        ])  # fmt: skip

    def read_namespaced_pod_log(self, name, namespace, tail_lines):
        job_name, _, attempt = name.rpartition("-")
        script = self.jobs[job_name].script
        return script.attempts[min(int(attempt), len(script.attempts) - 1)][2]

    # --- the operator: RayJob -----------------------------------------------------------------

    def _reconcile_job(self, job: _Job) -> None:
        while job.last + RAYJOB_REQUEUE_S <= self.clock():
            job.last = max(job.last + RAYJOB_REQUEUE_S, self.clock() - RAYJOB_REQUEUE_S)
            self._job_step(job)

    def _job_step(self, job: _Job) -> None:
        spec, status = job.obj["spec"], job.obj.setdefault("status", {})
        now = self.clock()
        violations = admission_errors(job.obj)
        if violations:  # L144-L162
            status.update(jobDeploymentStatus="ValidationFailed", reason="ValidationFailed",
                          message=violations[0].message)  # fmt: skip
            return
        phase = status.get("jobDeploymentStatus", "")
        if phase in ("Complete", "Failed", "ValidationFailed"):
            return
        deadline = spec.get("activeDeadlineSeconds")
        if phase in ("Initializing", "Running") and deadline and now - job.start >= deadline:
            status.update(jobDeploymentStatus="Failed", reason="DeadlineExceeded",
                          message="The RayJob has passed the activeDeadlineSeconds. "
                                  f"ActiveDeadlineSeconds: {deadline}")  # fmt: skip
        elif phase == "":  # New (L166-L178)
            job.start = job.start if job.start is not None else now
            job.phase_since = now
            status.update(jobDeploymentStatus="Initializing", jobStatus="")
        elif phase == "Initializing":  # waits for RayCluster Ready (L207-L216), then L236
            if now - job.phase_since >= job.script.cluster_ready_s:
                job.phase_since = now
                status.update(jobDeploymentStatus="Running", jobStatus="PENDING")
        elif phase == "Running":  # L331-L349
            runs_s, final, _ = job.script.attempts[min(job.attempt, len(job.script.attempts) - 1)]
            if now - job.phase_since < runs_s:
                status["jobStatus"] = "RUNNING"
            else:
                status["jobStatus"] = final
                if final == "FAILED":
                    message = "Job entrypoint command failed with exit code 1"
                    status.update(jobDeploymentStatus="Failed", reason="AppFailed", message=message)
                else:
                    status.update(jobDeploymentStatus="Complete", reason="", message="")
        elif phase == "Retrying":  # L366-L410: resources deleted, back to New
            job.attempt += 1
            status.update(jobDeploymentStatus="", jobStatus="", reason="", message="")
            return
        # checkBackoffLimitAndUpdateStatusIfNeeded (L516-L557)
        if status.get("jobDeploymentStatus") == "Failed" and phase != "Failed":
            status["failed"] = status.get("failed", 0) + 1
            limit = spec.get("backoffLimit")
            retry = limit is not None and status["failed"] < limit + 1
            if retry and status.get("reason") not in (
                "DeadlineExceeded",
                "JobStatusCheckTimeoutExceeded",
            ):
                status["jobDeploymentStatus"] = "Retrying"

    # --- the operator: RayService -------------------------------------------------------------

    def _reconcile_service(self, service: _Service, once: bool = False) -> None:
        if once:  # a watch event: one reconcile now, the periodic ones resume from here
            self._service_step(service)
            service.last = self.clock()
            return
        while service.last + RAYSERVICE_REQUEUE_S <= self.clock():
            service.last = max(service.last + RAYSERVICE_REQUEUE_S,
                               self.clock() - RAYSERVICE_REQUEUE_S)  # fmt: skip
            self._service_step(service)

    def served(self, name: str) -> dict[str, Any]:
        """What /health of the Serve Service answers (the active cluster's application)."""
        cluster = self.services[name].active
        if cluster is None or not cluster["ever_running"]:
            raise OSError("connection refused")
        if cluster["version"] is None:
            return {"status": "no-model", "model_version": None}
        return {"status": "ready", "model_version": cluster["version"]}

    def _resolve(self, uri: str) -> str | None:
        if "@" in uri:
            return self.registry.get(uri.split("@", 1)[1])
        return uri.rsplit("/", 1)[-1]

    def _serve(self, cluster: dict[str, Any], config: str) -> dict[str, Any]:
        """reconcileServe (L2043-L2057): status read first, then a changed config submitted."""
        seen = {"status": cluster["app"], "message": cluster["message"]}
        now = self.clock()
        if cluster["config"] != config:
            cluster.update(config=config, app="DEPLOYING", message="", since=now)
        elif cluster["app"] == "DEPLOYING" and now - cluster["since"] >= self.deploy_s:
            state, message = self.serve_outcome(config)
            cluster.update(app=state, message=message)
            if state == "RUNNING":  # the old replicas are replaced by the new config's
                cluster.update(version=self._resolve(_model_uri(config)), ever_running=True)
        elif cluster["app"] == "RUNNING" and cluster["version"] is None:
            # Our app on an empty registry: it looks for the first champion and serves it.
            cluster["version"] = self._resolve(_model_uri(config))
        return {APP_NAME: seen}

    def _service_step(self, service: _Service) -> None:
        obj, now = service.obj, self.clock()
        status = obj.setdefault("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        violations = admission_errors(obj)
        if violations:  # L156-L171
            conditions["Ready"] = {"type": "Ready", "status": "False", "reason": "ValidationFailed",
                                   "message": violations[0].message}  # fmt: skip
            status["conditions"] = list(conditions.values())
            return
        spec = obj["spec"]
        goal = _hash(spec["rayClusterConfig"])
        new_cluster = {"hash": goal, "config": None, "app": "NOT_STARTED", "message": "",
                       "since": now, "version": None, "created": now,
                       "ever_running": False}  # fmt: skip
        current = service.pending or service.active
        if current is None or current["hash"] != goal:  # shouldPrepareNewCluster (NewCluster)
            service.pending = new_cluster
        active_apps = pending_apps = None
        if service.pending is not None:
            if now - service.pending["created"] >= self.cluster_ready_s:
                pending_apps = self._serve(service.pending, spec["serveConfigV2"])
                if service.pending["app"] == "RUNNING":  # promotion (L583-L640)
                    service.active, service.pending = service.pending, None
        elif service.active is not None:
            active_apps = self._serve(service.active, spec["serveConfigV2"])
        status["observedGeneration"] = obj["metadata"]["generation"]  # L653
        status["activeServiceStatus"] = {"applicationStatuses": active_apps} if active_apps else {}
        status["pendingServiceStatus"] = (
            {"applicationStatuses": pending_apps} if pending_apps else {}
        )
        # Serve endpoints: ready worker pods, i.e. /health answering (our readiness probe);
        # replicas of the last config that ran keep answering while a new one deploys or fails.
        endpoints = service.active is not None and service.active["ever_running"]
        ready = conditions.get("Ready")
        if endpoints:  # calculateConditions L785-L801
            conditions["Ready"] = {"type": "Ready", "status": "True",
                                   "reason": "NonZeroServeEndpoints"}  # fmt: skip
        elif ready is None or ready["status"] == "False":
            conditions["Ready"] = {"type": "Ready", "status": "False", "reason": "Initializing"}
        else:
            conditions["Ready"] = {"type": "Ready", "status": "False",
                                   "reason": "ZeroServeEndpoints"}  # fmt: skip
        upgrading = service.active is not None and service.pending is not None
        conditions["UpgradeInProgress"] = {"type": "UpgradeInProgress",
                                           "status": "True" if upgrading else "False"}  # fmt: skip
        status["conditions"] = list(conditions.values())


class _ApiClient:
    """kubernetes.client.ApiClient.call_api, for the server-side apply the launcher sends."""

    def __init__(self, fake: FakeKubeRay) -> None:
        self.fake = fake
        self.calls: list[dict[str, Any]] = []

    def call_api(self, path, method, path_params, query_params, header_params, body=None,
                 **kwargs):  # fmt: skip
        self.calls.append({"path": path, "method": method, "params": dict(query_params),
                           "headers": header_params, "body": body})  # fmt: skip
        assert method == "PATCH"
        assert header_params["Content-Type"] == "application/apply-patch+yaml"
        assert path_params["plural"] == "rayservices"
        params = dict(query_params)
        return self.fake.apply(body, params["fieldManager"], params.get("force") == "true")
