"""Kubeflow Pipelines (v2): preprocess -> train -> [tune] -> evaluate -> [deploy if improved].

    ray-app pipeline compile                                   # pipelines/adult_income.yaml
    ray-app pipeline run --local --ray-address http://127.0.0.1:8265 \\
        --tracking-uri sqlite:////abs/mlflow.db --storage-path /abs/ray_results

Train and tune launch KubeRay RayJobs (`launch.backend: kuberay`, the default on a cluster)
or, for a laptop, jobs on a local Ray head through the Job Submission API (`local`), running
the same `ray-app train|tune` entrypoint either way (ray_app/platform/launch.py). Deploy updates the
RayService's serveConfigV2 (or PUTs the same Serve config to the local head).

No `from __future__ import annotations` here: KFP reads the component signatures' real types.
"""

import logging
import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import dsl

from ray_app.core.config import IMAGE
from ray_app.platform.launch import LaunchConfig

PIPELINE_NAME = "adult-income"
LAUNCH_FIELDS = {"backend", "namespace", "image", "tracking_uri", "storage_path", "cleanup"}


def default_launch(image: str = IMAGE) -> dict[str, Any]:
    """The pipeline's `launch` parameter default: LaunchConfig's own defaults (KubeRay,
    in-cluster), with the image the steps run in (one image for steps and RayJobs)."""
    return LaunchConfig(image=image).model_dump(include=LAUNCH_FIELDS)


# --- what each step does (plain functions; the components below only call these) --------------


def _data_dir() -> Path | None:
    """The image's data folder (RAY_APP_DATA_DIR, as the CLI reads it), else the default."""
    data_dir = os.environ.get("RAY_APP_DATA_DIR")
    return Path(data_dir) if data_dir else None


def _launcher(launch: dict[str, Any]) -> Any:
    from ray_app.platform.launch import KubeRayJobs, LocalRayJobs

    cfg = LaunchConfig(**launch)
    if cfg.backend == "local":
        # Ray 2.60 token auth: the head's token from the environment (never a param), else
        # the file a local `ray start` / `ray.init()` wrote (Ray's own clients read both).
        token = os.environ.get("RAY_AUTH_TOKEN")
        token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
        if not token and token_file.is_file():
            token = token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return cfg, LocalRayJobs(cfg, headers)
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return cfg, KubeRayJobs(client.CustomObjectsApi(), client.CoreV1Api(), cfg)


def data_config(args: str) -> Any:
    """The data section the train job will build from the same `ray-app train` options."""
    import argparse

    from ray_app.core.config import DataConfig

    parser = argparse.ArgumentParser(add_help=False)
    for flag, kind in (("--data", str), ("--test-data", str), ("--test-fraction", float),
                       ("--max-test-overlap", float), ("--subsample", int)):  # fmt: skip
        parser.add_argument(flag, type=kind)
    known, _ = parser.parse_known_args(shlex.split(args))
    values = {"train_path": known.data, "test_path": known.test_data,
              "test_fraction": known.test_fraction, "max_test_overlap": known.max_test_overlap,
              "subsample": known.subsample, "data_dir": _data_dir()}  # fmt: skip
    return DataConfig(**{k: v for k, v in values.items() if v is not None})


def preprocess_step(args: str = "") -> dict[str, Any]:
    """Validate the data the train step will use (layout, checksums, schema, test overlap)
    and report the splits: a bad file fails here, before any cluster starts."""
    from ray_app.data.files import load_splits, summarise

    return summarise(load_splits(data_config(args)))


def job_step(kind: str, launch: dict[str, Any], args: str) -> dict[str, Any]:
    """Run `ray-app train|tune --json <args>` on the backend; return its JSON result."""
    from ray_app.platform import manifests as kuberay
    from ray_app.platform.launch import job_name

    cfg, launcher = _launcher(launch)
    argv = shlex.split(args)
    entrypoint, runtime_env = kuberay.job_payload(
        kind,  # type: ignore[arg-type]
        argv,
        tracking_uri=cfg.tracking_uri,
        storage_path=cfg.storage_path,
    )
    name = job_name(kind)  # type: ignore[arg-type]
    if cfg.backend == "local":
        outcome = launcher.run(name, entrypoint, runtime_env)
    else:
        outcome = launcher.submit(kind, argv, name)
    result: dict[str, Any] = outcome.result
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
    from ray_app.core.config import TrackingConfig

    return f"models:/{TrackingConfig().registered_model}/{_version(candidate)}"


def evaluate_step(
    launch: dict[str, Any], candidate: dict[str, Any], args: str = ""
) -> dict[str, Any]:
    """Score the candidate on the test split of the data the train step used (`args`: its
    options; adult.test by default); `improved`: the registry made it champion."""
    from mlflow.tracking import MlflowClient

    from ray_app.core.config import AppConfig
    from ray_app.training.jobs import run_evaluate_job

    cfg = LaunchConfig(**launch)
    app = AppConfig(data=data_config(args))
    app.tracking.tracking_uri = cfg.tracking_uri
    name, version = app.tracking.registered_model, _version(candidate)
    report = run_evaluate_job(app, model_uri(candidate))
    champion = MlflowClient(cfg.tracking_uri).get_model_version_by_alias(
        name, app.tracking.champion_alias
    )
    metrics = {k: v for k, v in report.items() if k.startswith("test_")}
    return {"improved": str(champion.version) == version, "metrics": metrics}


def deploy_step(launch: dict[str, Any], model_uri: str) -> dict[str, Any]:
    """Serve `model_uri` with the RayService's Serve config (pinned version, in place)."""
    import yaml

    from ray_app.core.config import TrackingConfig
    from ray_app.serving.graph import LOCAL_HOST, POD_HOST, ServeArgs, serve_config
    from ray_app.tracking.registry import pin

    cfg, launcher = _launcher(launch)
    # The RayService's pods carry MLFLOW_TRACKING_URI; the local head's apps need it in args.
    local = cfg.backend == "local"
    tracking = cfg.tracking_uri if local else None
    host = LOCAL_HOST if local else POD_HOST
    # The running app's args (the alias of the same registered model) with the version
    # pinned in user_config: an in-place rollout, the replicas are reconfigured, not replaced.
    alias = TrackingConfig().champion_alias
    name = model_uri.removeprefix("models:/").split("/", 1)[0].split("@", 1)[0]
    args = ServeArgs(model_uri=f"models:/{name}@{alias}", tracking_uri=tracking)
    version = pin(model_uri, cfg.tracking_uri)[1]
    doc = serve_config(args, host=host, model_version=version)
    result: dict[str, Any] = launcher.deploy(yaml.safe_dump(doc, sort_keys=False), version)
    return {**result, "model_uri": model_uri}


# --- components: thin, self-contained (KFP ships each function's source to the step) ----------


def preprocess_op(args: str) -> dict:
    from ray_app.platform.pipeline import preprocess_step

    return preprocess_step(args)


def train_op(launch: dict, args: str) -> dict:
    from ray_app.platform.pipeline import job_step

    return job_step("train", launch, args)


def tune_op(launch: dict, args: str) -> dict:
    from ray_app.platform.pipeline import job_step

    return job_step("tune", launch, args)


def keep_op(result: dict) -> dict:
    """Tuning skipped: the trained model is the candidate."""
    return result


def evaluate_op(launch: dict, candidate: dict, args: str, metrics: dsl.Output[dsl.Metrics]) -> bool:
    """Test-set metrics of the candidate; True if it is now the champion."""
    from ray_app.platform.pipeline import evaluate_step

    out = evaluate_step(launch, candidate, args)
    for key, value in out["metrics"].items():
        metrics.log_metric(key, value)
    metrics.log_metric("improved", int(out["improved"]))
    return bool(out["improved"])


def deploy_op(launch: dict, candidate: dict) -> dict:
    from ray_app.platform.pipeline import deploy_step, model_uri

    return deploy_step(launch, model_uri(candidate))


def build_pipeline(image: str = IMAGE) -> Any:
    """The pipeline, its steps running in `image` (which has ray-app and kfp installed)."""

    def component(func: Any) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    launch_default = default_launch(image)

    preprocess, train, tune, keep, evaluate, deploy = map(
        component, (preprocess_op, train_op, tune_op, keep_op, evaluate_op, deploy_op)
    )

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def adult_income(
        # KFP reads this default as the parameter's default (a dict constant, never mutated).
        launch: dict = launch_default,
        train_args: str = "",
        run_tune: bool = False,
        tune_args: str = "",
    ) -> None:
        data = preprocess(args=train_args).set_caching_options(False)
        trained = train(launch=launch, args=train_args).after(data).set_caching_options(False)
        with dsl.If(run_tune == True, "tune"):  # noqa: E712 (a KFP condition, not Python)
            tuned = tune(launch=launch, args=tune_args).set_caching_options(False)
        with dsl.Else("no-tune"):
            kept = keep(result=trained.output)
        candidate = dsl.OneOf(tuned.output, kept.output)
        evaluation = evaluate(launch=launch, candidate=candidate, args=train_args)
        evaluation.set_caching_options(False)
        # kfp.local resolves a condition on a task's "Output", not on NamedTuple fields.
        with dsl.If(evaluation.outputs["Output"] == True, "improved"):  # noqa: E712
            deploy(launch=launch, candidate=candidate).set_caching_options(False)

    return adult_income


def compile_pipeline(path: Path, image: str = IMAGE) -> Path:
    """Write the pipeline's IR YAML (upload it to a Kubeflow Pipelines server)."""
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(image), str(path))
    return path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain_text(text: str) -> str:
    """kfp.local's messages without their terminal colours."""
    return _ANSI.sub("", text)


class TaskLines(logging.Filter):
    """kfp.local's task records as one console line each (`say`); the records still reach
    kfp's own handler (the log file). A filter on the root logger, because kfp.local replaces
    the root's handlers for every task but leaves its filters alone."""

    _TASK = re.compile(
        r"^(Executing task|Task) '([^']+)'(?: finished with status (\w+)| outputs:)?"
    )

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__()
        self.say, self.started, self.ended = say, {}, []  # type: ignore[var-annotated]

    def filter(self, record: logging.LogRecord) -> bool:
        text = plain_text(record.getMessage())
        match = self._TASK.match(text)
        if not match:
            return True
        kind, task, status = match.groups()
        if kind == "Executing task":
            self.started[task] = time.monotonic()
            self.say(f"  {task:<13} running")
        elif status:
            seconds = time.monotonic() - self.started.get(task, time.monotonic())
            self.ended.append((task, status))
            self.say(f"  {task:<13} {status:<8} {seconds:6.1f} s")
        else:  # "Task 'x' outputs:" + the outputs, one per line
            found = re.search(r"model_version['\"]?:\s*['\"]?(\d+)", text)
            if found:
                done = "serving" if task == "deploy-op" else "registered"
                self.say(f"  {task:<13} {done} version {found.group(1)}")
            improved = re.search(r"Output: (True|False)\b", text)
            if task == "evaluate-op" and improved:
                verdict = "champion: deploy" if improved.group(1) == "True" else "not better: keep"
                self.say(f"  {task:<13} {verdict}")
        return True


def run_local(
    launch: dict[str, Any],
    pipeline_root: Path,
    train_args: str = "",
    run_tune: bool = False,
    tune_args: str = "",
    say: Callable[[str], None] | None = None,
) -> list[tuple[str, str]]:
    """The whole pipeline in subprocesses of this machine (kfp.local), against `launch`;
    `say`: one line per task started / ended. Returns (task, status) in the order they ended."""
    import sys

    from kfp import local

    # Steps run as `python3 -m kfp.dsl.executor_main`: this interpreter's environment first.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    lines = TaskLines(say or (lambda _: None))
    root = logging.getLogger()
    root.addFilter(lines)
    try:
        build_pipeline()(
            launch=launch, train_args=train_args, run_tune=run_tune, tune_args=tune_args
        )
    finally:
        root.removeFilter(lines)
    return lines.ended
