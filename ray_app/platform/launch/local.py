"""The local backend: a Ray head's Job Submission API for jobs (a laptop's `ray start --head`)
and its Serve REST API for deploys (`PUT /api/serve/applications/`, the call KubeRay makes)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ray_app.core.config import AppConfig
from ray_app.platform import manifests
from ray_app.platform.launch.base import (
    NO_DEADLINE_S,
    HttpGet,
    Job,
    JobFailed,
    JobOutcome,
    Log,
    Poller,
    failure,
    http_get,
    parse_result,
    served_version,
)
from ray_app.serving.config import LOCAL_HOST, serve_config


class LocalRayJobs:
    """The same jobs through a Ray head's Job Submission and Serve REST APIs."""

    def __init__(
        self,
        cfg: AppConfig,
        headers: dict[str, str] | None = None,
        log: Log = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        get: HttpGet = http_get,
    ) -> None:
        self.app, self.cfg, self.headers, self.log = cfg, cfg.launch, headers or {}, log
        self.poller = Poller(cfg.launch.poll_s, clock, sleep)
        self.get = get

    def run(self, job: Job) -> JobOutcome:
        """Submit `ray-app <kind> --json <args>` with the RayJob's runtime env; wait for it.
        A job of the same submission id from an earlier attempt is adopted while it runs or
        once it succeeded; SIGTERM or a timeout stops the job before the step ends."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self.cfg.ray_address, headers=self.headers)
        job_id = self._submit(client, job)
        seen: list[Any] = []

        def terminal() -> Any:
            status = client.get_job_status(job_id)
            if not seen or seen[-1] != status:
                seen.append(status)
                self.log(f"job {job_id}: {status.value}")
            return status if status.is_terminal() else None

        limit = self.cfg.timeout_s or NO_DEADLINE_S

        def timed_out() -> Exception:
            return failure(f"job {job_id}", f"no result after {limit:.0f} s (stopped)", "",
                           client.get_job_logs(job_id))  # fmt: skip

        try:
            status = self.poller.until(terminal, limit, timed_out)
        except BaseException:  # our timeout, SIGTERM (Terminated), Ctrl-C: stop what we started
            client.stop_job(job_id)
            self.log(f"stopped job {job_id}")
            raise
        logs = client.get_job_logs(job_id)
        if status != JobStatus.SUCCEEDED:
            info = client.get_job_info(job_id)
            raise failure(f"job {job_id}", status.value, info.message or "", logs)
        return JobOutcome(job_id, status.value, logs, parse_result(logs))

    def _submit(self, client: Any, job: Job) -> str:
        """Submit, or adopt an earlier attempt's job of the same id (running or succeeded);
        a failed one keeps its id, so the new submission gets a suffix."""
        from ray.job_submission import JobStatus

        entrypoint, runtime_env = manifests.job_payload(
            job.kind, job.args, tracking_uri=self.cfg.tracking_uri,
            storage_path=self.cfg.storage_path,
        )  # fmt: skip
        name = job.name or None
        if name is not None:
            try:
                earlier = client.get_job_status(name)
            except RuntimeError:  # no such job
                earlier = None
            if earlier is not None and earlier in (JobStatus.PENDING, JobStatus.RUNNING,
                                                   JobStatus.SUCCEEDED):  # fmt: skip
                self.log(f"adopting job {name} of an earlier attempt ({earlier.value})")
                return str(name)
            if earlier is not None:
                name = f"{name}-{int(time.time())}"
        job_id: str = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                        submission_id=name)  # fmt: skip
        self.log(f"submitted {job_id} to {self.cfg.ray_address}: {entrypoint}")
        return job_id

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

    def deploy(self, version: str | None) -> dict[str, Any]:
        """PUT the Serve config with `version` pinned (None: the alias, resolved by the app),
        as KubeRay does; wait until it is RUNNING and /health names the version (right after
        the PUT the old application may still report RUNNING)."""
        # The head's applications need the tracking URI in their args (no pod environment).
        args = self.app.serve.model_copy(
            update={
                "model_uri": self.app.tracking.champion_uri,
                "tracking_uri": self.cfg.tracking_uri,
            }
        )
        doc = serve_config(args, host=LOCAL_HOST, port=self.cfg.serve_port, model_version=version)
        try:
            self._request("PUT", "/api/serve/applications/", doc)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise JobFailed(f"Serve REST API refused the config: {exc.code} {body}") from None
        apps = [a["name"] for a in doc["applications"]]
        host = self.cfg.ray_address.split("://", 1)[-1].rsplit(":", 1)[0]
        serve_url = f"http://{host}:{self.cfg.serve_port}"
        last: dict[str, Any] = {}

        def served() -> dict[str, Any] | None:
            details = self._request("GET", "/api/serve/applications/") or {}
            states = {
                n: details.get("applications", {}).get(n, {}).get("status", "NOT_STARTED")
                for n in apps
            }
            failed = [n for n, s in states.items() if s == "DEPLOY_FAILED"]
            if failed:
                message = details["applications"][failed[0]].get("message", "")
                raise JobFailed(f"Serve application {failed[0]} DEPLOY_FAILED: {message}")
            last.update(states=states, serving=None)
            if all(s == "RUNNING" for s in states.values()):
                last["serving"] = served_version(self.get, serve_url)
                if version is None or last["serving"] == version:
                    self.log(f"Serve applications {apps} RUNNING version {version}")
                    return {
                        "applications": states,
                        "port": self.cfg.serve_port,
                        "model_version": version,
                    }
            return None

        def timed_out() -> Exception:
            return JobFailed(
                f"Serve apps not serving {version} after "
                f"{self.cfg.deploy_timeout_s:.0f} s: {last.get('states')}, "
                f"serving {last.get('serving')}"
            )

        return self.poller.until(served, self.cfg.deploy_timeout_s, timed_out)
