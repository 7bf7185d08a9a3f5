"""The KubeRay backend: RayJobs and the RayService through the Kubernetes API.

A job is a RayJob created on the cluster spec of the overlay the user deployed (the suspended
`ray-app-train|tune` RayJobs are the templates: sizes, GPU group, image), polled until
KubeRay's state machine ends it (Complete, Failed, ValidationFailed), its `status.reason` /
`message` and the submitter pod's logs surfaced on failure, deleted per policy on every path.
Deploy server-side-applies the RayService's serveConfigV2 and waits until the Serve
application of that config is RUNNING and answers with the new model version.

The KubeRay sequences this follows are read from ray-project/kuberay v1.7.0:
`ray-operator/controllers/ray/rayjob_controller.go` (Reconcile, L89-L462: New -> Initializing
-> Running -> Complete | Failed, Retrying back to New while `backoffLimit` allows, and
ValidationFailed from validateRayJob, L144-L162, which is never reconciled again) and
`rayservice_controller.go` (calculateStatus, L643-L783: observedGeneration is set on every
reconcile, Ready means "some Serve endpoint", so neither proves that a new config is live;
the application's own status in `activeServiceStatus.applicationStatuses` does).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from ray_app.core.config import AppConfig
from ray_app.core.constants import APP_NAME
from ray_app.platform import manifests
from ray_app.platform.launch.base import (
    NO_DEADLINE_S,
    HttpGet,
    Job,
    JobFailed,
    JobKind,
    JobOutcome,
    Log,
    Poller,
    failure,
    http_get,
    parse_result,
    served_version,
)
from ray_app.serving.config import POD_HOST, serve_config

GROUP, VERSION = "ray.io", "v1"
# rayjob_types.go L49-L58: Complete and Failed are terminal (IsJobDeploymentTerminal, L63);
# ValidationFailed is never left (rayjob_controller.go L144-L162).
TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")


def template_name(kind: JobKind) -> str:
    """The overlay's suspended RayJob whose cluster spec the launcher's jobs use."""
    return f"ray-app-{kind}"


def build_rayjob(job: Job, cfg: AppConfig, template: dict[str, Any] | None = None) -> dict:
    """The RayJob the launcher creates: the template's cluster (as deployed) or the generated
    one with the launch image; on its own cluster or on `launch.reuse_cluster`."""
    launch = cfg.launch
    _, runtime_env = manifests.job_payload(
        job.kind, job.args, tracking_uri=launch.tracking_uri, storage_path=launch.storage_path
    )
    cluster = None
    if template is not None and not launch.reuse_cluster:
        cluster = copy.deepcopy(template["spec"]["rayClusterSpec"])
    manifest = manifests.rayjob(
        job.kind,
        job.args,
        name=job.name,
        reuse_cluster=launch.reuse_cluster,
        runtime_env=runtime_env,
        ray_cluster_spec=cluster,
    )
    manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "ray-app-launcher"
    if cluster is None:
        return manifests.with_image(manifest, launch.image)
    # The submitter (`ray job submit`) runs the cluster's image, as KubeRay's default submitter
    # does: the template's head image as deployed, not the generator's placeholder (which
    # names no registry: on GKE the submitter pod could not pull it).
    head_image = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    submitter = manifest["spec"]["submitterPodTemplate"]
    manifest["spec"]["submitterPodTemplate"] = manifests.with_image(submitter, head_image)
    return manifest


class KubeRayJobs:
    """RayJobs and the RayService through the Kubernetes API (CustomObjectsApi's methods)."""

    def __init__(
        self,
        custom: Any,
        core: Any,
        cfg: AppConfig,
        log: Log = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        get: HttpGet = http_get,
    ) -> None:
        self.custom, self.core, self.app, self.cfg, self.log = custom, core, cfg, cfg.launch, log
        self.poller = Poller(cfg.launch.poll_s, clock, sleep)
        self.get = get

    # --- the API calls -------------------------------------------------------------------
    def _get(self, plural: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, plural, name
        )
        return obj

    def _delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, "rayjobs", name
        )
        self.log(f"deleted RayJob {self.cfg.namespace}/{name}")

    def _apply(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the deploy step's field manager, owning only what `body`
        names. `force`: a field another manager holds with another value (a person's `kubectl
        edit`, a cluster set up before this split of owners) moves to the deploy step; the
        release never applies serveConfigV2, so it never holds it.

        The Python client (kubernetes<31) has no apply call for custom objects: this is the
        same PATCH with the apply content type.
        """
        name = body["metadata"]["name"]
        result: dict[str, Any] = self.custom.api_client.call_api(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            "PATCH",
            {
                "group": GROUP,
                "version": VERSION,
                "namespace": self.cfg.namespace,
                "plural": plural,
                "name": name,
            },
            [("fieldManager", manifests.DEPLOY_MANAGER), ("force", "true")],
            {"Accept": "application/json", "Content-Type": "application/apply-patch+yaml"},
            body=body,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return result

    def _logs(self, name: str) -> str:
        """Logs of the newest submitter pod (the K8s Job KubeRay runs `ray job submit` in)."""
        if self.core is None:
            return ""
        try:
            pods = self.core.list_namespaced_pod(
                self.cfg.namespace, label_selector=f"job-name={name}"
            ).items
            if not pods:
                return ""
            newest = max(pods, key=lambda p: p.metadata.creation_timestamp)
            text: str = self.core.read_namespaced_pod_log(
                newest.metadata.name, self.cfg.namespace, tail_lines=2000
            )
            return text
        except Exception as exc:  # logs are best effort; the status already says what failed
            return f"(could not read submitter logs: {exc})"

    # --- jobs ----------------------------------------------------------------------------
    def template(self, kind: JobKind) -> dict[str, Any] | None:
        """The deployed template RayJob, or None (then the generated cluster spec is used)."""
        if not self.cfg.job_templates:
            return None
        name = template_name(kind)
        try:
            found = self._get("rayjobs", name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                self.log(f"no RayJob {self.cfg.namespace}/{name}: using the generated cluster")
                return None
            raise
        self.log(f"cluster spec from RayJob {self.cfg.namespace}/{name} (the deployed overlay)")
        return found

    def run(self, job: Job) -> JobOutcome:
        """Run the job's RayJob to a terminal state; its result, or JobFailed.

        A RayJob of the same name from an earlier attempt of this step (a retried KFP task:
        the name comes from the run and the task) is adopted while it runs or once it
        succeeded, and replaced when it failed: a retry never starts a second job. A job this
        step gives up on while it may still run (our timeout, an API error, SIGTERM) is
        deleted unless cleanup is `never`; a job that ended is deleted per policy
        (`on-success` keeps failed ones for inspection).
        """
        return self.run_manifest(build_rayjob(job, self.app, self.template(job.kind)))

    def _existing(self, name: str) -> dict[str, Any] | None:
        try:
            return self._get("rayjobs", name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    def _start(self, manifest: dict[str, Any], where: str) -> None:
        """Create the RayJob, or adopt the one an earlier attempt created."""
        name = manifest["metadata"]["name"]
        found = self._existing(name)
        if found is not None:
            status = found.get("status") or {}
            state = (status.get("jobDeploymentStatus", ""), status.get("jobStatus", ""))
            if state[0] not in TERMINAL_DEPLOYMENT or state == ("Complete", "SUCCEEDED"):
                self.log(f"{where}: adopting the RayJob of an earlier attempt "
                         f"({state[0] or 'New'}/{state[1] or '-'})")  # fmt: skip
                return
            self.log(f"{where}: an earlier attempt ended {state[0]}/{state[1] or '-'}: "
                     "replacing it")  # fmt: skip
            self._delete(name)
            self.poller.until(lambda: self._existing(name) is None or None, self.cfg.settle_s
                              + 300, lambda: JobFailed(f"{where}: still deleting"))  # fmt: skip
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, "rayjobs", manifest,
            field_manager=manifests.LAUNCH_MANAGER,
        )  # fmt: skip
        self.log(f"created {where}")

    def run_manifest(self, manifest: dict[str, Any]) -> JobOutcome:
        name = manifest["metadata"]["name"]
        where = f"RayJob {self.cfg.namespace}/{name}"
        self._start(manifest, where)
        try:
            status = self._wait(name, where, wait_limit(manifest, self.cfg.timeout_s))
        except BaseException:  # our timeout, an API error, SIGTERM (Terminated), Ctrl-C
            if self.cfg.cleanup != "never":
                try:
                    self._delete(name)
                except Exception as exc:
                    self.log(f"could not delete {where}: {exc}")
            raise
        deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
        succeeded = deployment == "Complete" and job == "SUCCEEDED"
        logs = "" if deployment == "ValidationFailed" else self._logs(name)
        if self.cfg.cleanup == "always" or (succeeded and self.cfg.cleanup == "on-success"):
            self._delete(name)
        state = f"{deployment}/{job or '-'}"
        if status.get("reason"):
            state += f" ({status['reason']})"
        if not succeeded:
            raise failure(where, state, status.get("message", ""), logs)
        return JobOutcome(name, state, logs, parse_result(logs))

    def _wait(self, name: str, where: str, limit_s: float) -> dict[str, Any]:
        seen: list[tuple[str, str]] = []

        def terminal() -> dict[str, Any] | None:
            status: dict[str, Any] = self._get("rayjobs", name).get("status") or {}
            state = (status.get("jobDeploymentStatus", ""), status.get("jobStatus", ""))
            if not seen or seen[-1] != state:
                seen.append(state)
                self.log(f"{where}: {state[0] or 'New'}/{state[1] or '-'}")
            return status if state[0] in TERMINAL_DEPLOYMENT else None

        def timed_out() -> Exception:
            deployment, job = seen[-1] if seen else ("", "")
            return failure(where, f"no result after {limit_s:.0f} s",
                           f"last status {deployment or 'New'}/{job or '-'}",
                           self._logs(name))  # fmt: skip

        return self.poller.until(terminal, limit_s, timed_out)

    # --- serving -------------------------------------------------------------------------
    def deploy(self, version: str | None) -> dict[str, Any]:
        """Apply serveConfigV2 (`version` pinned; None: the alias, resolved by the app) as
        field manager DEPLOY_MANAGER, the field's one owner; wait until its application is
        RUNNING and, for a pinned version, serves it.

        An in-place config change keeps Ready=True (the old version keeps serving), and the
        status KubeRay writes right after the change still describes the old config
        (rayservice_controller.go reconcileServe, L2043-L2057, reads the status before it
        submits). So success is: application RUNNING, no upgrade in progress, and /health of
        the Serve Service naming `version`. DEPLOY_FAILED or UNHEALTHY that lasts `settle_s`
        fails the step with the application's message.
        """
        # The RayService's pods carry MLFLOW_TRACKING_URI: the args name no tracking URI.
        args = self.app.serve.model_copy(update={"model_uri": self.app.tracking.champion_uri,
                                                 "tracking_uri": None})  # fmt: skip
        doc = manifests.serve_config_v2(serve_config(args, host=POD_HOST, model_version=version))
        body = manifests.serve_config_apply(doc, self.cfg.namespace)
        generation = self._apply("rayservices", body).get("metadata", {}).get("generation", 0)
        where = f"RayService {self.cfg.namespace}/{self.cfg.service}"
        self.log(f"applied serveConfigV2 to {where} as {manifests.DEPLOY_MANAGER} "
                 f"(generation {generation})")  # fmt: skip
        watch = _ServiceWatch(self, where, generation, version)
        return self.poller.until(watch.check, self.cfg.deploy_timeout_s, watch.timed_out)


# A RayJob attempt's time before its deadline clock starts, and its cluster's start: the
# launcher's wait covers every attempt the operator may make (`wait_limit`).
ATTEMPT_START_S = 900.0


def wait_limit(manifest: dict[str, Any], configured: float | None) -> float:
    """How long to wait for a RayJob: `configured`, else every attempt the operator may make.

    KubeRay resets `startTime` on each retry (rayjob_controller.go initRayJobStatusIfNeed,
    L887-L917), so `activeDeadlineSeconds` applies per attempt; `backoffLimit` retries follow
    a failed attempt (checkBackoffLimitAndUpdateStatusIfNeeded, L518-L557). The limit is
    (backoffLimit + 1) x (activeDeadlineSeconds + ATTEMPT_START_S)."""
    if configured is not None:
        return configured
    spec = manifest.get("spec") or {}
    attempts = int(spec.get("backoffLimit") or 0) + 1
    deadline = spec.get("activeDeadlineSeconds")
    per_attempt = NO_DEADLINE_S if deadline is None else float(deadline) + ATTEMPT_START_S
    return attempts * per_attempt


class _ServiceWatch:
    """One look at the RayService after a deploy: done, still waiting, or failed."""

    def __init__(self, jobs: KubeRayJobs, where: str, generation: int,
                 version: str | None) -> None:  # fmt: skip
        self.jobs, self.where, self.generation, self.version = jobs, where, generation, version
        self.bad_since: float | None = None
        self.last = ""

    def check(self) -> dict[str, Any] | None:
        jobs, cfg = self.jobs, self.jobs.cfg
        status = jobs._get("rayservices", cfg.service).get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions", [])}
        ready = conditions.get("Ready", {})
        if ready.get("reason") == "ValidationFailed":
            raise JobFailed(f"{self.where}: ValidationFailed: {ready.get('message', '')}")
        observed = status.get("observedGeneration", 0) >= self.generation
        upgrading = conditions.get("UpgradeInProgress", {}).get("status") == "True"
        # During a NewCluster upgrade the new config runs on the pending cluster.
        side = "pendingServiceStatus" if upgrading else "activeServiceStatus"
        app = ((status.get(side) or {}).get("applicationStatuses") or {}).get(APP_NAME, {})
        state, message = app.get("status", "NOT_STARTED"), app.get("message", "")
        self.last = f"{side} {APP_NAME} {state}; Ready={ready.get('status')}"
        if observed and state in ("DEPLOY_FAILED", "UNHEALTHY"):
            now = jobs.poller.clock()
            self.bad_since = now if self.bad_since is None else self.bad_since
            if now - self.bad_since >= cfg.settle_s:
                raise JobFailed(f"{self.where}: Serve application {APP_NAME} {state}: {message}")
        else:
            self.bad_since = None
        if not (observed and not upgrading and state == "RUNNING"
                and ready.get("status") == "True"):  # fmt: skip
            return None
        done = {"service": f"{cfg.namespace}/{cfg.service}", "generation": self.generation}
        if self.version is None:  # the alias, resolved by the app: RUNNING is the answer
            jobs.log(f"{self.where}: {APP_NAME} RUNNING (the alias, unpinned)")
            return {**done, "model_version": None}
        serving = served_version(jobs.get, cfg.serve_url)
        if serving == self.version:
            jobs.log(f"{self.where}: {APP_NAME} RUNNING version {serving}")
            return {**done, "model_version": serving}
        self.last += f"; serving version {serving}, waiting for {self.version}"
        return None

    def timed_out(self) -> Exception:
        wanted = self.version or "the alias"
        return JobFailed(f"{self.where}: not serving {wanted} after "
                         f"{self.jobs.cfg.deploy_timeout_s:.0f} s: {self.last}")  # fmt: skip
