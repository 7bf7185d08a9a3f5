"""The Kubeflow Pipelines (v2) pipeline: preprocess -> train -> [tune] -> evaluate ->
[deploy if improved], compiled to IR YAML.

    ray-app pipeline compile                                   # pipelines/adult_income.yaml

No `from __future__ import annotations` here: KFP reads the component signatures' real types.
The components are thin and self-contained (KFP ships each function's source to its step):
each imports the step it runs from `ray_app.platform.pipeline.steps`.
"""

from pathlib import Path
from typing import Any

from kfp import dsl

from ray_app.core.constants import IMAGE
from ray_app.platform.pipeline.steps import default_launch
from ray_app.platform.podspec import MLFLOW_READER_SECRET, MLFLOW_WRITER_SECRET, security_context

PIPELINE_NAME = "adult-income"
DESCRIPTION = (
    "Kubeflow Pipelines (v2): preprocess -> train -> [tune] -> evaluate -> [deploy if improved]."
)


def preprocess_op(args: str) -> dict:
    from ray_app.platform.pipeline.steps import preprocess_step

    return preprocess_step(args)


def train_op(launch: dict, args: str, run_id: str, task: str) -> dict:
    from ray_app.platform.pipeline.steps import job_step

    return job_step("train", launch, args, run_id, task)


def tune_op(launch: dict, args: str, run_id: str, task: str) -> dict:
    from ray_app.platform.pipeline.steps import job_step

    return job_step("tune", launch, args, run_id, task)


def keep_op(result: dict) -> dict:
    """Tuning skipped: the trained model is the candidate."""
    return result


def evaluate_op(launch: dict, candidate: dict, args: str, metrics: dsl.Output[dsl.Metrics]) -> bool:
    """Test-set metrics of the candidate; True if it is now the champion."""
    from ray_app.platform.pipeline.steps import evaluate_step

    out = evaluate_step(launch, candidate, args)
    for key, value in out["metrics"].items():
        metrics.log_metric(key, value)
    metrics.log_metric("improved", int(out["improved"]))
    return bool(out["improved"])


def deploy_op(launch: dict, candidate: dict) -> dict:
    from ray_app.platform.pipeline.steps import deploy_step, model_uri

    return deploy_step(launch, model_uri(candidate))


# Which MLflow user each step logs in as (docs/mlflow.md): the train and tune steps launch
# RayJobs and read their runs, evaluate logs the test figures, all as the writer; deploy only
# resolves and pins a version, as the reader; preprocess never reaches MLflow.
STEP_USERS = {"train-op": MLFLOW_WRITER_SECRET, "tune-op": MLFLOW_WRITER_SECRET,
              "evaluate-op": MLFLOW_WRITER_SECRET, "deploy-op": MLFLOW_READER_SECRET}  # fmt: skip


def _harden(task: Any) -> Any:
    """A step pod as the `restricted` Pod Security Standard wants it (the profile namespace
    may enforce it, docs/security.md): the image's non-root user (no privilege escalation, no
    capabilities and the RuntimeDefault seccomp profile KFP 2.17 sets on every step itself, as
    kfp-kubernetes' set_security_context documents), and
    the step's MLflow user from its Secret in that namespace (optional: a tracking server
    without auth needs none)."""
    from kfp import kubernetes

    context = security_context()
    kubernetes.set_security_context(task, run_as_user=context["runAsUser"],
                                    run_as_group=context["runAsGroup"],
                                    run_as_non_root=context["runAsNonRoot"])  # fmt: skip
    secret = STEP_USERS.get(task.component_spec.name.replace("_", "-"))
    if secret:
        env = {
            "username": "MLFLOW_TRACKING_USERNAME",
            "password": "MLFLOW_TRACKING_PASSWORD",  # pragma: allowlist secret (a variable name)
        }
        kubernetes.use_secret_as_env(task, secret, secret_key_to_env=env, optional=True)
    return task


def build_pipeline(image: str = IMAGE) -> Any:
    """The pipeline, its steps running in `image` (which has ray-app and kfp installed)."""

    def component(func: Any) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    launch_default = default_launch(image)

    preprocess, train, tune, keep, evaluate, deploy = map(
        component, (preprocess_op, train_op, tune_op, keep_op, evaluate_op, deploy_op)
    )

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def adult_income(
        # KFP reads this default as the parameter's default (a dict constant, never mutated).
        launch: dict = launch_default,
        train_args: str = "",
        run_tune: bool = False,
        tune_args: str = "",
    ) -> None:
        data = _harden(preprocess(args=train_args)).set_caching_options(False)
        # The run and task name the step's RayJob: a retried task adopts its earlier job.
        ids = {
            "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "task": dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        }
        trained = _harden(train(launch=launch, args=train_args, **ids)).after(data)
        trained.set_caching_options(False)
        with dsl.If(run_tune == True, "tune"):  # noqa: E712 (a KFP condition, not Python)
            tuned = _harden(tune(launch=launch, args=tune_args, **ids))
            tuned.set_caching_options(False)
        with dsl.Else("no-tune"):
            kept = _harden(keep(result=trained.output))
        candidate = dsl.OneOf(tuned.output, kept.output)
        evaluation = _harden(evaluate(launch=launch, candidate=candidate, args=train_args))
        evaluation.set_caching_options(False)
        # kfp.local resolves a condition on a task's "Output", not on NamedTuple fields.
        with dsl.If(evaluation.outputs["Output"] == True, "improved"):  # noqa: E712
            _harden(deploy(launch=launch, candidate=candidate)).set_caching_options(False)

    return adult_income


def compile_pipeline(path: Path, image: str = IMAGE) -> Path:
    """Write the pipeline's IR YAML (upload it to a Kubeflow Pipelines server)."""
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(image), str(path))
    return path


def kfp_credentials(namespace: str | None, token_path: Path | None,
                    token: str | None) -> dict[str, Any]:  # fmt: skip
    """How `kfp.Client` authenticates. Multi-user KFP (a Profile namespace) sits behind an
    authenticating proxy (Dex / oauth2-proxy) that refuses a request without a bearer token:
    a ServiceAccount token with the KFP audience, mounted at `token_path` (KFP's own default
    path /var/run/secrets/kubeflow/pipelines/token inside a cluster), or a token given as is
    (RAY_APP_KFP_TOKEN, e.g. from `kubectl create token default-editor -n <profile>
    --audience=pipelines.kubeflow.org`). Single-user KFP needs none."""
    from kfp.client import KF_PIPELINES_SA_TOKEN_PATH, ServiceAccountTokenVolumeCredentials

    from ray_app.core.errors import UserError

    path = token_path or Path(KF_PIPELINES_SA_TOKEN_PATH)
    if token:
        return {"existing_token": token}
    if token_path is not None or path.is_file():
        return {"credentials": ServiceAccountTokenVolumeCredentials(path=str(path))}
    if namespace:
        raise UserError(
            "multi-user Kubeflow Pipelines needs credentials: --token-path FILE (a "
            "ServiceAccount token with audience pipelines.kubeflow.org) or RAY_APP_KFP_TOKEN"
        )
    return {}


def submit_run(host: str, namespace: str | None, service_account: str | None, train_args: str,
               run_tune: bool, tune_args: str, credentials: dict[str, Any] | None = None,
               image: str = IMAGE) -> str:  # fmt: skip
    """`ray-app pipeline run --host`: a run of the pipeline on a Kubeflow Pipelines server;
    returns its id.

    Single-user KFP runs every step in its own namespace (`kubeflow`) whatever a run asks;
    multi-user KFP runs them in the Profile namespace. Either way the steps' account gets the
    launcher's Role in ray-app from kuberay/kfp/{single,multi}-user.
    """
    import kfp

    account = service_account or ("default-editor" if namespace else "ray-app-pipeline")
    client = kfp.Client(host=host, namespace=namespace or "kubeflow", **(credentials or {}))
    run = client.create_run_from_pipeline_func(
        build_pipeline(image),
        namespace=namespace,
        service_account=account,
        arguments={"launch": default_launch(image), "train_args": train_args,
                   "run_tune": run_tune, "tune_args": tune_args},
    )  # fmt: skip
    return str(run.run_id)
