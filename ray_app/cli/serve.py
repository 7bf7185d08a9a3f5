"""`ray-app serve | serve-config | deploy | history | alias-set | rollback`: the Serve graph
locally, its config document, an in-place rollout of a registered version, and the champion
alias's recorded moves and rollback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ray_app.cli.console import emit, err, stdout_for_result
from ray_app.cli.options import HeadAddressOpt, JsonOpt, ModelUriOpt, Overrides, config, overrides
from ray_app.core.config import AppConfig, LaunchConfig, absolute_sqlite
from ray_app.core.constants import LOCAL_DASHBOARD, SERVE_PORT
from ray_app.core.errors import UserError

app = typer.Typer()
SERVE_CONFIG = Path("kuberay/serve-config.yaml")


@app.command()
@overrides("tracking")
def serve(
    options: Overrides,
    model_uri: ModelUriOpt = None,
    bundle_dir: Annotated[Path | None, typer.Option(help="local model bundle instead")] = None,
    host: Annotated[str, typer.Option(help="HTTP host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = SERVE_PORT,
    ray_address: Annotated[str | None, typer.Option(help="existing Ray (default: local)")] = None,
    prediction_log: Annotated[
        str | None,
        typer.Option(
            help="where the prediction log goes: a folder or s3:// / gs:// URI, 'off' "
            "(default: RAY_APP_PREDICTION_LOG, else ./ray_results/predictions)"
        ),
    ] = None,
    allow_anonymous: Annotated[
        bool,
        typer.Option(
            help="a non-loopback --host without RAY_APP_API_KEY: serve /predict to anyone "
            "anyway (else the replicas refuse to start; on 127.0.0.1 it is always allowed)"
        ),
    ] = False,
) -> None:
    """`serve run` the Serve config locally (a local Ray is started), on embedded defaults."""
    from ray_app.core.runtime import ensure_local_token
    from ray_app.core.settings import Settings
    from ray_app.serving.config import local_serve_run

    cfg = config(options)
    # Replicas do not share this process's working directory: paths are made absolute here.
    where = Settings().prediction_log_location(prediction_log or cfg.serve.prediction_log.location)
    log = cfg.serve.prediction_log.model_copy(update={"location": where or "off"})
    args = cfg.serve.model_copy(update={
        "model_uri": model_uri or cfg.tracking.champion_uri,
        "bundle_dir": str(bundle_dir.resolve()) if bundle_dir else None,
        "tracking_uri": absolute_sqlite(cfg.tracking.tracking_uri),
        "prediction_log": log,
        "allow_anonymous": allow_anonymous or cfg.serve.allow_anonymous})  # fmt: skip
    if ray_address is None:  # `serve run` starts a local Ray, with token auth (Ray's default)
        ensure_local_token()
    argv, env, path = local_serve_run(args, host, port, ray_address)
    err.print(f"serve run {path}  ->  http://{host}:{port}/docs  (prediction log: {where})")
    os.execve(argv[0], argv, {**os.environ, **env})


@app.command("serve-config")
def serve_config_cmd(
    out: Annotated[Path, typer.Option(help="where to write the Serve config")] = SERVE_CONFIG,
    rayservice: Annotated[
        bool,
        typer.Option(
            "--rayservice",
            help="print the RayService's serveConfigV2 as a "
            "server-side apply body instead (the deploy step's field)",
        ),
    ] = False,
) -> None:
    """Write the Serve config (the document `serve run` and the RayService use)."""
    from ray_app.serving.config import render_config, serve_config

    if rayservice:
        import yaml

        from ray_app.platform.manifests import serve_config_apply, serve_config_v2

        typer.echo(yaml.safe_dump(serve_config_apply(serve_config_v2()), sort_keys=False))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_config(serve_config()))
    typer.echo(str(out))


LocalOpt = Annotated[
    bool, typer.Option("--local", help="a Ray head's Serve REST API (else the RayService)")
]
ServePortOpt = Annotated[int, typer.Option(help="--local: Serve HTTP port")]
ServeUrlOpt = Annotated[
    str | None,
    typer.Option(
        help="the RayService's Serve URL as this machine reaches it (e.g. a "
        "port-forward); default: the in-cluster Service"
    ),
]
PinOpt = Annotated[
    bool,
    typer.Option(
        help="pin an alias to its version now (--no-pin: the app resolves "
        "the alias itself; no MLflow needed here)"
    ),
]


@app.command()
@overrides("tracking")
def deploy(
    options: Overrides,
    model_uri: Annotated[
        str, typer.Argument(help="the version to serve: models:/adult-income/3 or an alias")
    ],
    local: LocalOpt = False,
    ray_address: HeadAddressOpt = LOCAL_DASHBOARD,
    serve_port: ServePortOpt = SERVE_PORT,
    serve_url: ServeUrlOpt = None,
    pin: PinOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Serve a registered version in place (rollout or rollback): the pipeline's deploy step.

    Only the pinned version changes in the Serve config, so Serve reconfigures the running
    replicas (no restart, no request refused); returns once /health names the version.
    --tracking-uri: default ./mlflow.db with --local, the in-cluster MLflow else.
    """
    cfg = _deploy_config(options, local, ray_address, serve_port, serve_url)
    with stdout_for_result(as_json), err.status(f"deploying {model_uri}"):
        result = _deploy(cfg, model_uri, pin)
    emit(result, as_json, "deployed")


def _deploy_config(options: dict, local: bool, ray_address: str, serve_port: int,
                   serve_url: str | None) -> AppConfig:  # fmt: skip
    """The config tree with the launch settings a deploy needs (--local: the head's REST API
    and a local sqlite store made absolute)."""
    cfg = config(options)
    launch: dict[str, object] = {}
    if local:
        store = absolute_sqlite(cfg.tracking.tracking_uri)
        launch = {"backend": "local", "ray_address": ray_address, "serve_port": serve_port,
                  "poll_s": 1.0, "tracking_uri": store}  # fmt: skip
    elif options.get("tracking.tracking_uri"):  # e.g. a port-forwarded in-cluster MLflow
        launch = {"tracking_uri": cfg.tracking.tracking_uri}
    if serve_url and not local:
        launch["serve_url"] = serve_url.rstrip("/")
    cfg.launch = LaunchConfig.model_validate({**cfg.launch.model_dump(), **launch})
    return cfg


def _deploy(cfg: AppConfig, model_uri: str, pin: bool) -> dict:
    from ray_app.platform.pipeline.steps import deploy as deploy_version

    return deploy_version(cfg, model_uri, pin_version=pin)


@app.command()
@overrides("tracking")
def history(options: Overrides, as_json: JsonOpt = False) -> None:
    """Every move of the champion alias, oldest first: when, from -> to, why, the figures."""
    import mlflow

    from ray_app.tracking import history as alias_history

    cfg = config(options)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    moves = [m.model_dump() for m in alias_history.history(cfg.tracking)]
    if as_json:
        emit({"alias": cfg.tracking.champion_alias, "moves": moves}, True, "history")
        return
    if not moves:
        err.print(f"the {cfg.tracking.champion_alias} alias has no recorded move")
    for m in moves:
        typer.echo(f"{m['time']}  v{m['from_version'] or '-'} -> v{m['to_version']}  "
                   f"{m['kind']}: {m['reason']}")  # fmt: skip


@app.command(name="alias-set")
@overrides("tracking")
def alias_set(
    options: Overrides,
    version: Annotated[str, typer.Argument(help="the registered version the alias names")],
    reason: Annotated[str, typer.Option(help="why (recorded in the history)")],
    as_json: JsonOpt = False,
) -> None:
    """Move the champion alias by hand (recorded in the history; nothing is deployed)."""
    import mlflow

    from ray_app.tracking import history as alias_history

    cfg = config(options)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    _known_version(cfg, version)
    move = alias_history.move_alias(cfg.tracking, version, "manual", reason)
    emit(move.model_dump(), as_json, "moved")


@app.command()
@overrides("tracking")
def rollback(
    options: Overrides,
    deploy_it: Annotated[
        bool, typer.Option("--deploy/--no-deploy", help="serve the version rolled back to")
    ] = True,
    local: LocalOpt = False,
    ray_address: HeadAddressOpt = LOCAL_DASHBOARD,
    serve_port: ServePortOpt = SERVE_PORT,
    serve_url: ServeUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the champion alias back one step (a second rollback goes one further back) and
    serve that version in place, as `ray-app deploy` does (the alias then moves in the
    registry the deploy reads: ./mlflow.db with --local, the in-cluster MLflow else, or
    --tracking-uri; with --no-deploy, --tracking-uri or ./mlflow.db)."""
    import mlflow

    from ray_app.tracking import history as alias_history

    cfg = _deploy_config(options, local, ray_address, serve_port, serve_url)
    if deploy_it:  # the alias moves in the registry the deploy reads (see deploy)
        cfg.tracking.tracking_uri = cfg.launch.tracking_uri
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    move = alias_history.rollback(cfg.tracking)
    result: dict = {"move": move.model_dump(), "deployed": None}
    if deploy_it:
        uri = cfg.tracking.version_uri(move.to_version)
        with stdout_for_result(as_json), err.status(f"deploying {uri}"):
            try:
                result["deployed"] = _deploy(cfg, uri, True)
            except UserError as exc:
                said = f"the alias moved back to v{move.to_version}, but deploying it failed"
                raise UserError(f"{said}: {exc} (retry: ray-app deploy {uri})") from None
    emit(result, as_json, "rolled back")


def _known_version(cfg: AppConfig, version: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_model_version(cfg.tracking.registered_model, version)
    except MlflowException:
        raise UserError(f"{cfg.tracking.registered_model} has no version {version!r}") from None


@app.command()
@overrides("tracking")
def launch(
    options: Overrides,
    kind: Annotated[str, typer.Argument(help="train or tune")],
    args: Annotated[str, typer.Option(help="the job's `ray-app train|tune` options")] = "",
    local: Annotated[
        bool, typer.Option("--local", help="a Ray head's Job Submission API (else a RayJob)")
    ] = False,
    ray_address: HeadAddressOpt = LOCAL_DASHBOARD,
    namespace: Annotated[str | None, typer.Option(help="the RayJob's namespace")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run `ray-app train|tune` as a job: a RayJob on the cluster spec of the deployed
    `ray-app-<kind>` template (which stays suspended), or on a Ray head (--local).

    The pipeline's train/tune step: waits for the job and prints its result; Ctrl-C or SIGTERM
    deletes the job. --tracking-uri: default ./mlflow.db with --local, the in-cluster MLflow else.
    """
    from ray_app.platform.pipeline.steps import job_step

    if kind not in ("train", "tune"):
        raise UserError(f"ray-app launch: KIND is train or tune, not {kind!r}")
    cfg = config(options)
    fields: dict[str, object] = {}
    if local:
        fields = {"backend": "local", "ray_address": ray_address, "poll_s": 2.0,
                  "tracking_uri": absolute_sqlite(cfg.tracking.tracking_uri),
                  "storage_path": str(Path(cfg.ray.storage_path).resolve())}  # fmt: skip
    elif options.get("tracking.tracking_uri"):
        fields = {"tracking_uri": cfg.tracking.tracking_uri}
    if namespace:
        fields["namespace"] = namespace
    launch = LaunchConfig.model_validate({**cfg.launch.model_dump(), **fields})
    with stdout_for_result(as_json), err.status(f"running the {kind} job"):
        result = job_step(kind, launch.model_dump(), args)
    emit(result, as_json, f"{kind} job")
