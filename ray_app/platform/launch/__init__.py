"""Launchers: run `ray-app train|tune` as a job and deploy a registered version, on KubeRay
(RayJobs, the RayService), on a Ray head (Job Submission and Serve REST APIs) or, for the
monitor's retrain, on this machine. One interface (`Launcher`: run(job), deploy(version))."""

from __future__ import annotations

from ray_app.core.config import AppConfig
from ray_app.core.settings import Settings
from ray_app.platform.launch.base import Job, JobFailed, JobOutcome, Launcher, job_name

__all__ = ["Job", "JobFailed", "JobOutcome", "Launcher", "job_name", "make_launcher"]


def make_launcher(cfg: AppConfig, settings: Settings) -> Launcher:
    """The launcher `cfg.launch.backend` names. A local head with token auth gets the token
    (Ray 2.60) from the environment, else from the token file a `ray start` wrote."""
    if cfg.launch.backend == "local":
        from ray_app.platform.launch.local import LocalRayJobs

        token = settings.auth_token()
        return LocalRayJobs(cfg, {"Authorization": f"Bearer {token}"} if token else {})
    from kubernetes import client, config

    from ray_app.platform.launch.kuberay import KubeRayJobs

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return KubeRayJobs(client.CustomObjectsApi(), client.CoreV1Api(), cfg)
