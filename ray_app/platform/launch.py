"""Launch `ray-app train|tune` on Ray and deploy the Serve config, for pipeline steps.

Two backends run the same payload (`ray_app.platform.manifests.job_payload`):

- `kuberay`: create a RayJob through the Kubernetes API (`ray.io/v1`, `rayjobs`) on the cluster
  spec of the overlay the user deployed (the suspended `ray-app-train|tune` RayJobs are the
  templates: sizes, GPU group, image), poll its status until KubeRay's state machine ends it
  (Complete, Failed, ValidationFailed), surface `status.reason`/`message` and the submitter
  pod's logs on failure, delete it per policy on every path. Deploy server-side-applies the
  RayService's serveConfigV2 and waits until the Serve application of that config is RUNNING
  and answers with the new model version.
- `local`: the Ray Job Submission API of a Ray head (a laptop's `ray start --head`). Deploy is
  the REST call KubeRay itself makes: `PUT /api/serve/applications/`.

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
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ray_app.core.config import IMAGE
from ray_app.core.errors import UserError
from ray_app.platform import manifests as kuberay

GROUP, VERSION = "ray.io", "v1"
# rayjob_types.go L49-L58: Complete and Failed are terminal (IsJobDeploymentTerminal, L63);
# ValidationFailed is never left (rayjob_controller.go L144-L162).
TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")
LOG_TAIL = 4000
Log = Callable[[str], None]
HttpGet = Callable[[str], dict[str, Any]]


class LaunchConfig(BaseModel):
    """Where a pipeline's Ray work runs (validated once, at the step's edge)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["kuberay", "local"] = "kuberay"
    namespace: str = kuberay.NAMESPACE
    # Used when no template RayJob is deployed (job_templates); the pipeline compiled for a
    # release carries the pushed digest here.
    image: str = IMAGE
    # kuberay: take the cluster spec from the deployed `ray-app-train|tune` RayJobs.
    job_templates: bool = True
    # kuberay: reuse this RayCluster (clusterSelector) instead of a cluster per job.
    reuse_cluster: str | None = None
    # local: the head's dashboard (Job Submission and Serve REST API).
    ray_address: str = "http://127.0.0.1:8265"
    tracking_uri: str = kuberay.TRACKING_URI
    storage_path: str = kuberay.STORAGE_PATH
    poll_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(4 * 3600, gt=0)
    cleanup: Literal["always", "on-success", "never"] = "on-success"
    service: str = kuberay.SERVICE_NAME
    # kuberay: the RayService's Serve Service, whose /health names the served version.
    serve_url: str = kuberay.SERVE_URL
    serve_port: int = Field(8000, gt=0, lt=65536)
    # A failed or unhealthy application must stay so this long before deploy gives up (the
    # operator's status can lag one reconcile, ~2 s, behind the Serve controller).
    settle_s: float = Field(15.0, ge=0)


class JobFailed(UserError):
    """A Ray job ended in anything but success (message carries status and a log tail)."""


@dataclass
class JobOutcome:
    name: str
    status: str
    logs: str
    result: dict[str, Any]


def parse_result(logs: str) -> dict[str, Any]:
    """The `--json` result line: the last line of the job's output that is a JSON object."""
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    raise JobFailed("the job succeeded but printed no JSON result line")


def _failure(what: str, status: str, message: str, logs: str) -> JobFailed:
    tail = logs[-LOG_TAIL:] if logs else "(no logs)"
    header = f"{what}: {status}: {message or 'no message'}"
    return JobFailed(f"{header}\n--- job logs (tail) ---\n{tail}")


def job_name(kind: kuberay.JobKind, suffix: str | None = None) -> str:
    """A launched job's name: unique per run, a valid RayJob name (DNS-1035, <= 47)."""
    import uuid

    return f"ray-app-{kind}-{suffix or uuid.uuid4().hex[:8]}"


def template_name(kind: kuberay.JobKind) -> str:
    """The overlay's suspended RayJob whose cluster spec the launcher's jobs use."""
    return f"ray-app-{kind}"


def build_rayjob(
    kind: kuberay.JobKind,
    args: list[str],
    name: str,
    cfg: LaunchConfig,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The RayJob the launcher creates: the template's cluster (as deployed) or the generated
    one with `cfg.image`; on its own cluster or on `cfg.reuse_cluster`."""
    _, runtime_env = kuberay.job_payload(
        kind, args, tracking_uri=cfg.tracking_uri, storage_path=cfg.storage_path
    )
    cluster = None
    if template is not None and not cfg.reuse_cluster:
        cluster = copy.deepcopy(template["spec"]["rayClusterSpec"])
    manifest = kuberay.rayjob(
        kind,
        args,
        name=name,
        reuse_cluster=cfg.reuse_cluster,
        runtime_env=runtime_env,
        ray_cluster_spec=cluster,
    )
    manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "ray-app-launcher"
    return manifest if cluster is not None else kuberay.with_image(manifest, cfg.image)


def _http_get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read() or b"{}")
        return body


def served_version(http_get: HttpGet, url: str) -> str | None:
    """The model version the Serve app's /health names (None: not answering or no model)."""
    try:
        version = http_get(url.rstrip("/") + "/health").get("model_version")
    except (OSError, ValueError):
        return None
    return None if version is None else str(version)


class KubeRayJobs:
    """RayJobs and the RayService through the Kubernetes API (CustomObjectsApi's methods)."""

    def __init__(
        self,
        custom: Any,
        core: Any,
        cfg: LaunchConfig,
        log: Log = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        http_get: HttpGet = _http_get,
    ) -> None:
        self.custom, self.core, self.cfg, self.log = custom, core, cfg, log
        self.clock, self.sleep, self.http_get = clock, sleep, http_get

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
        """Server-side apply as field manager `ray-app` (the release job applies as it too).

        The Python client (kubernetes<31) has no apply call for custom objects: this is the
        same PATCH with the apply content type. `force` takes over only the fields in `body`.
        """
        name = body["metadata"]["name"]
        result: dict[str, Any] = self.custom.api_client.call_api(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            "PATCH",
            {"group": GROUP, "version": VERSION, "namespace": self.cfg.namespace,
             "plural": plural, "name": name},
            [("fieldManager", kuberay.FIELD_MANAGER), ("force", "true")],
            {"Accept": "application/json", "Content-Type": "application/apply-patch+yaml"},
            body=body,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )  # fmt: skip
        return result

    def template(self, kind: kuberay.JobKind) -> dict[str, Any] | None:
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

    def submit(self, kind: kuberay.JobKind, args: list[str], name: str) -> JobOutcome:
        """Build the RayJob (template's cluster) and run it."""
        return self.run(build_rayjob(kind, args, name, self.cfg, self.template(kind)))

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

    def run(self, manifest: dict[str, Any]) -> JobOutcome:
        """Create the RayJob, wait for a terminal state, return its result or raise JobFailed.

        A job this step gives up on while it may still run (our timeout, an API error, an
        interrupt) is deleted unless cleanup is `never`; a job that ended is deleted per policy
        (`on-success` keeps failed ones for inspection).
        """
        name = manifest["metadata"]["name"]
        where = f"RayJob {self.cfg.namespace}/{name}"
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, "rayjobs", manifest
        )
        self.log(f"created {where}")
        try:
            status = self._wait(name, where)
        except BaseException:
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
            raise _failure(where, state, status.get("message", ""), logs)
        return JobOutcome(name, state, logs, parse_result(logs))

    def _wait(self, name: str, where: str) -> dict[str, Any]:
        deadline = self.clock() + self.cfg.timeout_s
        seen = None
        while True:
            status: dict[str, Any] = self._get("rayjobs", name).get("status") or {}
            deployment = status.get("jobDeploymentStatus", "")
            job = status.get("jobStatus", "")
            if (deployment, job) != seen:
                seen = (deployment, job)
                self.log(f"{where}: {deployment or 'New'}/{job or '-'}")
            if deployment in TERMINAL_DEPLOYMENT:
                return status
            if self.clock() >= deadline:
                raise _failure(
                    where,
                    f"no result after {self.cfg.timeout_s:.0f} s",
                    f"last status {deployment or 'New'}/{job or '-'}",
                    self._logs(name),
                )
            self.sleep(self.cfg.poll_s)

    def deploy(
        self, serve_doc: str, expected_version: str, ready_timeout_s: float = 1800
    ) -> dict[str, Any]:
        """Apply serveConfigV2; wait until its application is RUNNING and serves the version.

        An in-place config change keeps Ready=True (the old version keeps serving), and the
        status KubeRay writes right after the change still describes the old config
        (rayservice_controller.go reconcileServe, L2043-L2057, reads the status before it
        submits). So success is: application RUNNING, no upgrade in progress, and /health of
        the Serve Service naming `expected_version`. DEPLOY_FAILED or UNHEALTHY that lasts
        `settle_s` fails the step with the application's message.
        """
        from ray_app.serving.graph import APP_NAME

        name, ns = self.cfg.service, self.cfg.namespace
        where = f"RayService {ns}/{name}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RayService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"serveConfigV2": serve_doc},
        }
        generation = self._apply("rayservices", body).get("metadata", {}).get("generation", 0)
        self.log(f"applied serveConfigV2 to {where} (generation {generation})")
        deadline = self.clock() + ready_timeout_s
        bad_since: float | None = None
        last = ""
        while True:
            status = self._get("rayservices", name).get("status") or {}
            conditions = {c.get("type"): c for c in status.get("conditions", [])}
            ready = conditions.get("Ready", {})
            if ready.get("reason") == "ValidationFailed":
                raise JobFailed(f"{where}: ValidationFailed: {ready.get('message', '')}")
            observed = status.get("observedGeneration", 0) >= generation
            upgrading = conditions.get("UpgradeInProgress", {}).get("status") == "True"
            # During a NewCluster upgrade the new config runs on the pending cluster.
            side = "pendingServiceStatus" if upgrading else "activeServiceStatus"
            app = ((status.get(side) or {}).get("applicationStatuses") or {}).get(APP_NAME, {})
            state, message = app.get("status", "NOT_STARTED"), app.get("message", "")
            last = f"{side} {APP_NAME} {state}; Ready={ready.get('status')}"
            if observed and state in ("DEPLOY_FAILED", "UNHEALTHY"):
                bad_since = self.clock() if bad_since is None else bad_since
                if self.clock() - bad_since >= self.cfg.settle_s:
                    raise JobFailed(f"{where}: Serve application {APP_NAME} {state}: {message}")
            else:
                bad_since = None
            if observed and not upgrading and state == "RUNNING" and ready.get("status") == "True":
                serving = served_version(self.http_get, self.cfg.serve_url)
                if serving == expected_version:
                    self.log(f"{where}: {APP_NAME} RUNNING version {serving}")
                    return {"service": f"{ns}/{name}", "generation": generation,
                            "model_version": serving}  # fmt: skip
                last += f"; serving version {serving}, waiting for {expected_version}"
            if self.clock() >= deadline:
                raise JobFailed(f"{where}: not serving {expected_version} after "
                                f"{ready_timeout_s:.0f} s: {last}")  # fmt: skip
            self.sleep(self.cfg.poll_s)


class LocalRayJobs:
    """The same jobs through a Ray head's Job Submission and Serve REST APIs."""

    def __init__(
        self,
        cfg: LaunchConfig,
        headers: dict[str, str] | None = None,
        log: Log = print,
    ) -> None:
        self.cfg, self.headers, self.log = cfg, headers or {}, log

    def run(self, name: str, entrypoint: str, runtime_env: dict[str, Any]) -> JobOutcome:
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self.cfg.ray_address, headers=self.headers)
        job_id = client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, submission_id=name
        )
        self.log(f"submitted {job_id} to {self.cfg.ray_address}: {entrypoint}")
        deadline = time.monotonic() + self.cfg.timeout_s
        seen = None
        while True:
            status = client.get_job_status(job_id)
            if status != seen:
                seen = status
                self.log(f"job {job_id}: {status.value}")
            if status.is_terminal():
                break
            if time.monotonic() >= deadline:
                client.stop_job(job_id)
                raise _failure(
                    f"job {job_id}",
                    f"no result after {self.cfg.timeout_s:.0f} s (stopped)",
                    "",
                    client.get_job_logs(job_id),
                )
            time.sleep(min(self.cfg.poll_s, 2.0))
        logs = client.get_job_logs(job_id)
        if status != JobStatus.SUCCEEDED:
            info = client.get_job_info(job_id)
            raise _failure(f"job {job_id}", status.value, info.message or "", logs)
        return JobOutcome(job_id, status.value, logs, parse_result(logs))

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.cfg.ray_address.rstrip("/") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **self.headers},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def deploy(
        self, serve_doc: str, expected_version: str, ready_timeout_s: float = 600
    ) -> dict[str, Any]:
        """PUT the Serve config (as KubeRay does); wait until it is RUNNING and /health names
        `expected_version` (right after the PUT the old application may still report RUNNING).
        """
        import yaml

        doc = yaml.safe_load(serve_doc)
        doc.setdefault("http_options", {})["port"] = self.cfg.serve_port
        try:
            self._request("PUT", "/api/serve/applications/", doc)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise JobFailed(f"Serve REST API refused the config: {exc.code} {body}") from None
        deadline = time.monotonic() + ready_timeout_s
        apps = [a["name"] for a in doc["applications"]]
        host = self.cfg.ray_address.split("://", 1)[-1].rsplit(":", 1)[0]
        serve_url = f"http://{host}:{self.cfg.serve_port}"
        while True:
            details = self._request("GET", "/api/serve/applications/") or {}
            states = {
                n: details.get("applications", {}).get(n, {}).get("status", "NOT_STARTED")
                for n in apps
            }
            failed = [n for n, s in states.items() if s == "DEPLOY_FAILED"]
            if failed:
                message = details["applications"][failed[0]].get("message", "")
                raise JobFailed(f"Serve application {failed[0]} DEPLOY_FAILED: {message}")
            serving = None
            if all(s == "RUNNING" for s in states.values()):
                serving = served_version(_http_get, serve_url)
                if serving == expected_version:
                    self.log(f"Serve applications {apps} RUNNING version {serving}")
                    return {"applications": states, "port": self.cfg.serve_port,
                            "model_version": serving}  # fmt: skip
            if time.monotonic() >= deadline:
                raise JobFailed(
                    f"Serve apps not serving {expected_version} after {ready_timeout_s} s: "
                    f"{states}, serving {serving}"
                )
            time.sleep(1.0)
