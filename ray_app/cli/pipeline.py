"""`ray-app pipeline compile | run`: the Kubeflow pipeline, compiled, or run here / on KFP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.cli.console import log_file, ray_output_to_file, say
from ray_app.cli.options import Overrides, config, overrides
from ray_app.core.config import LaunchConfig, absolute_sqlite
from ray_app.core.constants import IMAGE, LOCAL_DASHBOARD, SERVE_PORT
from ray_app.core.errors import UserError
from ray_app.core.redact import redact
from ray_app.core.settings import Settings

app = typer.Typer(help="The Kubeflow Pipelines (v2) pipeline.", no_args_is_help=True)


@app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="IR YAML to write")] = Path(
        "pipelines/adult_income.yaml"
    ),
    image: Annotated[str, typer.Option(help="image of every step")] = IMAGE,
) -> None:
    """Compile the pipeline to IR YAML (upload it to Kubeflow Pipelines)."""
    from ray_app.platform.pipeline.definition import compile_pipeline

    typer.echo(str(compile_pipeline(out, image)))


@app.command("run")
@overrides("tracking", "ray")
def pipeline_run(
    options: Overrides,
    local: Annotated[
        bool, typer.Option("--local", help="run every step here (kfp.local), Ray jobs on a head")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Kubeflow Pipelines endpoint")] = None,
    train_args: Annotated[str, typer.Option(help="extra `ray-app train` options")] = "",
    tune: Annotated[bool, typer.Option(help="also search with Ray Tune (ASHA)")] = False,
    tune_args: Annotated[str, typer.Option(help="extra `ray-app tune` options")] = "",
    serve_port: Annotated[int, typer.Option(help="--local: Serve HTTP port")] = SERVE_PORT,
    pipeline_root: Annotated[Path, typer.Option(help="--local: step outputs")] = Path(
        "pipeline_runs"
    ),
    namespace: Annotated[
        str | None,
        typer.Option(help="--host: multi-user KFP's Profile namespace (unset: single-user KFP)"),
    ] = None,
    service_account: Annotated[
        str | None,
        typer.Option(
            help="--host: the steps' service account (default: ray-app-pipeline single-user, "
            "default-editor multi-user; see kuberay/kfp/)"
        ),
    ] = None,
    token_path: Annotated[
        Path | None,
        typer.Option(
            help="--host, multi-user KFP: a ServiceAccount token file (audience "
            "pipelines.kubeflow.org); or set RAY_APP_KFP_TOKEN"
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="--local: every step's output here, not in a log")
    ] = False,
) -> None:
    """Run the pipeline: --local on this machine against a Ray head (--ray-address: its
    dashboard URL), or --host on Kubeflow."""
    if local == bool(host):
        raise UserError("give exactly one of --local or --host")
    if host:
        from ray_app.platform.pipeline.definition import kfp_credentials, submit_run

        token = Settings().kfp_token
        credentials = kfp_credentials(namespace, token_path,
                                      token.get_secret_value() if token else None)  # fmt: skip
        run_id = submit_run(host, namespace, service_account, train_args, tune, tune_args,
                            credentials)  # fmt: skip
        typer.echo(f"run {run_id} on {host}")
        return
    from ray_app.platform.pipeline.local import run_pipeline_here

    cfg = config(options)
    # The Ray jobs run in another working directory: absolute paths.
    launch = LaunchConfig(backend="local", ray_address=cfg.ray.address or LOCAL_DASHBOARD,
                          tracking_uri=absolute_sqlite(cfg.tracking.tracking_uri),
                          storage_path=str(Path(cfg.ray.storage_path).resolve()),
                          serve_port=serve_port, poll_s=2.0)  # fmt: skip
    log = None if verbose else log_file(launch.storage_path, "pipeline")
    if log is not None:
        say(f"Step output (kfp.local, Ray jobs): {log}")
    with ray_output_to_file(log):
        summary = run_pipeline_here(launch, pipeline_root.resolve(), train_args, tune, tune_args,
                                    say, log)  # fmt: skip
    say(summary)
    say(f"MLflow: {redact(launch.tracking_uri)}; outputs under {pipeline_root.resolve()}")
