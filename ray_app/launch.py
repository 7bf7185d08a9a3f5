"""Launch `ray-app train|tune` on Ray and deploy the Serve config, for pipeline steps.

Two backends run the same payload (`ray_app.kuberay.job_payload`):

- `kuberay`: create a RayJob through the Kubernetes API (`ray.io/v1`, `rayjobs`), poll its
  status until `jobDeploymentStatus` is terminal, surface `status.message` and the submitter
  pod's logs on failure, delete it per policy. Deploy patches the RayService's serveConfigV2
  and waits for its `Ready` condition.
- `local`: the Ray Job Submission API of a Ray head (a laptop's `ray start --head`). Deploy is
  the REST call KubeRay itself makes: `PUT /api/serve/applications/`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ray_app import kuberay
from ray_app.config import IMAGE
from ray_app.errors import UserError

GROUP, VERSION = "ray.io", "v1"
TERMINAL_DEPLOYMENT = ("Complete", "Failed")
LOG_TAIL = 4000
Log = Callable[[str], None]


class LaunchConfig(BaseModel):
    """Where a pipeline's Ray work runs (validated once, at the step's edge)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["kuberay", "local"] = "kuberay"
    namespace: str = "ray-app"
    image: str = IMAGE
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
    serve_port: int = Field(8000, gt=0, lt=65536)


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


class KubeRayJobs:
    """RayJobs through the Kubernetes API (any object with CustomObjectsApi's methods)."""

    def __init__(
        self,
        custom: Any,
        core: Any,
        cfg: LaunchConfig,
        log: Log = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.custom, self.core, self.cfg, self.log = custom, core, cfg, log
        self.clock, self.sleep = clock, sleep

    def _get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, "rayjobs", name
        )
        return obj

    def _delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, "rayjobs", name
        )
        self.log(f"deleted RayJob {self.cfg.namespace}/{name}")

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
        """Create the RayJob, wait for a terminal state, return its result or raise JobFailed."""
        name = manifest["metadata"]["name"]
        where = f"RayJob {self.cfg.namespace}/{name}"
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.cfg.namespace, "rayjobs", manifest
        )
        self.log(f"created {where}")
        deadline = self.clock() + self.cfg.timeout_s
        seen = None
        while True:
            status = self._get(name).get("status") or {}
            deployment = status.get("jobDeploymentStatus", "")
            job = status.get("jobStatus", "")
            if (deployment, job) != seen:
                seen = (deployment, job)
                self.log(f"{where}: {deployment or 'New'}/{job or '-'}")
            if deployment in TERMINAL_DEPLOYMENT:
                break
            if self.clock() >= deadline:
                logs = self._logs(name)
                if self.cfg.cleanup != "never":
                    self._delete(name)
                raise _failure(
                    where,
                    f"no result after {self.cfg.timeout_s:.0f} s",
                    f"last status {deployment or 'New'}/{job or '-'}",
                    logs,
                )
            self.sleep(self.cfg.poll_s)
        succeeded = deployment == "Complete" and job == "SUCCEEDED"
        logs = self._logs(name)
        if self.cfg.cleanup == "always" or (succeeded and self.cfg.cleanup == "on-success"):
            self._delete(name)
        state = f"{deployment}/{job or '-'}"
        if status.get("reason"):
            state += f" ({status['reason']})"
        if not succeeded:
            raise _failure(where, state, status.get("message", ""), logs)
        return JobOutcome(name, state, logs, parse_result(logs))

    def deploy(self, serve_doc: str, ready_timeout_s: float = 1800) -> dict[str, Any]:
        """Patch the RayService's serveConfigV2 and wait until it is Ready on that generation."""
        name, ns = self.cfg.service, self.cfg.namespace
        patched = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "rayservices", name, {"spec": {"serveConfigV2": serve_doc}}
        )
        generation = patched.get("metadata", {}).get("generation", 0)
        deadline = self.clock() + ready_timeout_s
        while True:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "rayservices", name)
            status = obj.get("status") or {}
            conditions = {c.get("type"): c for c in status.get("conditions", [])}
            ready = conditions.get("Ready", {})
            observed = status.get("observedGeneration", 0) >= generation
            upgrading = conditions.get("UpgradeInProgress", {}).get("status") == "True"
            if observed and not upgrading and ready.get("status") == "True":
                self.log(f"RayService {ns}/{name} Ready at generation {generation}")
                return {"service": f"{ns}/{name}", "generation": generation}
            if self.clock() >= deadline:
                raise JobFailed(
                    f"RayService {ns}/{name} not Ready after {ready_timeout_s:.0f} s: "
                    f"{ready.get('reason', '')} {ready.get('message', '')}".strip()
                )
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

    def deploy(self, serve_doc: str, ready_timeout_s: float = 600) -> dict[str, Any]:
        """PUT the Serve config (as KubeRay does), wait for RUNNING and the app's /health."""
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
            if all(s == "RUNNING" for s in states.values()) and self._healthy():
                self.log(f"Serve applications {apps} RUNNING on port {self.cfg.serve_port}")
                return {"applications": states, "port": self.cfg.serve_port}
            if time.monotonic() >= deadline:
                raise JobFailed(f"Serve apps not RUNNING after {ready_timeout_s} s: {states}")
            time.sleep(1.0)

    def _healthy(self) -> bool:
        host = self.cfg.ray_address.split("://", 1)[-1].rsplit(":", 1)[0]
        try:
            with urllib.request.urlopen(
                f"http://{host}:{self.cfg.serve_port}/health", timeout=5
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False
