"""What each pipeline step does: plain functions the KFP components call, on any backend.

    preprocess -> train -> [tune] -> evaluate -> [deploy if the registry made it champion]

Train and tune run `ray-app train|tune` as a job through the launcher (KubeRay RayJobs on a
cluster; a Ray head's Job Submission API on a laptop); deploy serves the new version in place.
Every step starts from the same `launch` settings (`LaunchConfig`), passed as a parameter.
"""

from __future__ import annotations

import shlex
from typing import Any

from ray_app.core.config import AppConfig, DataConfig, LaunchConfig
from ray_app.core.constants import IMAGE
from ray_app.core.settings import Settings
from ray_app.data.splits import load_splits, summarise
from ray_app.platform.launch import Job, Launcher, job_name, make_launcher
from ray_app.platform.launch.base import terminated_as_exception

LAUNCH_FIELDS = ("backend", "namespace", "image", "tracking_uri", "storage_path", "cleanup")


def default_launch(image: str = IMAGE) -> dict[str, Any]:
    """The pipeline's `launch` parameter default: LaunchConfig's own defaults (KubeRay,
    in-cluster), with the image the steps run in (one image for steps and RayJobs)."""
    launch = LaunchConfig(image=image).model_dump()
    return {key: launch[key] for key in LAUNCH_FIELDS}


def step_config(launch: dict[str, Any], args: str = "") -> AppConfig:
    """A step's config tree: the launch settings, the tracking store they name, and the data
    section the train job builds from the same `ray-app train` options (`args`)."""
    cfg = LaunchConfig(**launch)
    tree = AppConfig(launch=cfg, data=data_config(args))
    tree.tracking.tracking_uri = cfg.tracking_uri
    return tree


def _launcher(cfg: AppConfig) -> Launcher:
    return make_launcher(cfg, Settings())


def data_config(args: str) -> DataConfig:
    """The data section the train job will build from the same `ray-app train` options."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    for flag, kind in (("--data", str), ("--test-data", str), ("--test-fraction", float),
                       ("--max-test-overlap", float), ("--subsample", int)):  # fmt: skip
        parser.add_argument(flag, type=kind)
    known, _ = parser.parse_known_args(shlex.split(args))
    values = {"train_path": known.data, "test_path": known.test_data,
              "test_fraction": known.test_fraction, "max_test_overlap": known.max_test_overlap,
              "subsample": known.subsample, "data_dir": Settings().data_dir}  # fmt: skip
    return DataConfig(**{k: v for k, v in values.items() if v is not None})


def preprocess_step(args: str = "") -> dict[str, Any]:
    """Validate the data the train step will use (layout, checksums, schema, test overlap)
    and report the splits: a bad file fails here, before any cluster starts."""
    return summarise(load_splits(data_config(args)))


def step_job_name(kind: str, run_id: str = "", task: str = "") -> str:
    """The RayJob of a step: named after the KFP run and task, so a retried task finds (and
    adopts) the job of its earlier attempt; a random name outside a KFP run."""
    if not run_id:
        return job_name(kind)  # type: ignore[arg-type]
    import hashlib

    digest = hashlib.sha256(f"{run_id}/{task}".encode()).hexdigest()[:10]
    return job_name(kind, digest)  # type: ignore[arg-type]


def job_step(kind: str, launch: dict[str, Any], args: str, run_id: str = "",
             task: str = "") -> dict[str, Any]:  # fmt: skip
    """Run `ray-app train|tune --json <args>` on the backend; return its JSON result. SIGTERM
    (the step's pod deleted, the run cancelled) deletes (or, per `cleanup`, keeps) the job."""
    if kind not in ("train", "tune"):
        raise ValueError(f"unknown job kind {kind!r}")
    cfg = step_config(launch)
    job = Job(kind, shlex.split(args), step_job_name(kind, run_id, task))  # type: ignore[arg-type]
    with terminated_as_exception():
        result: dict[str, Any] = _launcher(cfg).run(job).result
    if result.get("model_version") is None:
        raise RuntimeError(f"{kind} job registered no model version: {result}")
    return _without_nulls(result)


def _without_nulls(value: Any) -> Any:
    """KFP parameters cannot carry null (a first model has no previous champion): drop them."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _version(candidate: dict[str, Any]) -> str:
    # KFP passes dicts as protobuf Structs: every number arrives as a float (2 -> 2.0).
    return str(int(candidate["model_version"]))


def model_uri(candidate: dict[str, Any]) -> str:
    """Registry URI of a train/tune result's model version (pinned, not an alias)."""
    return AppConfig().tracking.version_uri(_version(candidate))


def evaluate_step(
    launch: dict[str, Any], candidate: dict[str, Any], args: str = ""
) -> dict[str, Any]:
    """Score the candidate on the test split of the data the train step used (`args`: its
    options; adult.test by default); `improved`: the registry made it champion."""
    from mlflow.tracking import MlflowClient

    from ray_app.training.jobs import run_evaluate_job

    cfg = step_config(launch, args)
    version = _version(candidate)
    report = run_evaluate_job(cfg, cfg.tracking.version_uri(version))
    champion = MlflowClient(cfg.tracking.tracking_uri).get_model_version_by_alias(
        cfg.tracking.registered_model, cfg.tracking.champion_alias
    )
    metrics = {k: v for k, v in report.to_json().items() if k.startswith("test_")}
    return {"improved": str(champion.version) == version, "metrics": metrics}


def deploy(cfg: AppConfig, model_uri: str, pin_version: bool = True) -> dict[str, Any]:
    """Serve `model_uri` in place, where `cfg.launch` says: the RayService's Serve config, or
    a Ray head's Serve REST API (`ray-app deploy`). A version is pinned (an alias is resolved
    to its version first); an alias that names no version yet, or `pin_version=False`,
    deploys the alias itself, which the app resolves (and serves 'no-model' until then)."""
    from ray_app.tracking.registry import NoModelYet, pin

    version: str | None = None
    if pin_version:
        try:
            version = pin(model_uri, cfg.launch.tracking_uri)[1]
        except NoModelYet:
            version = None
    with terminated_as_exception():
        return {**_launcher(cfg).deploy(version), "model_uri": model_uri}


def deploy_step(launch: dict[str, Any], model_uri: str) -> dict[str, Any]:
    """The pipeline's deploy step: `deploy` with the pipeline's launch settings."""
    return deploy(step_config(launch), model_uri)
