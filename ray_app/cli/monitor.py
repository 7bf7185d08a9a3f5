"""`ray-app monitor`: drift and live performance of new rows against the training reference,
and the retrain it may start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from ray_app.cli.console import emit, err, stdout_for_result
from ray_app.cli.options import JsonOpt, ModelUriOpt, Overrides, config, overrides
from ray_app.core.config import absolute_sqlite
from ray_app.core.constants import LOCAL_DASHBOARD
from ray_app.core.errors import UserError
from ray_app.core.settings import Settings

app = typer.Typer()


@app.command()
@overrides("tracking", "monitor")
def monitor(
    options: Overrides,
    data_path: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="the prediction log (default: the one the serving graph "
            "writes), or a file, folder, glob or URI of recent rows (CSV/Parquet)",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="a prediction log's window: 24h, 7d, or an ISO start time (default: all)"
        ),
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="CSV/Parquet of request_id,income to join to the log")
    ] = None,
    model_uri: ModelUriOpt = None,
    out: Annotated[Path | None, typer.Option(help="report folder")] = None,
    retrain: Annotated[bool, typer.Option(help="on drift or a performance drop, train")] = False,
    dry_run: Annotated[bool, typer.Option(help="--retrain: say what would run")] = False,
    train_args: Annotated[str, typer.Option(help="--retrain: `ray-app train` options")] = "",
    launch: Annotated[
        str, typer.Option(help="--retrain on: here (a local Ray), head (--ray-address), kuberay")
    ] = "here",
    ray_address: Annotated[
        str, typer.Option(help="--launch head: the Ray head's dashboard URL")
    ] = LOCAL_DASHBOARD,
    as_json: JsonOpt = False,
) -> None:
    """Drift (PSI per feature and score) and live performance against the training reference."""
    from ray_app.platform.retrain import Where
    from ray_app.platform.retrain import monitor as run_monitor

    if launch not in ("here", "head", "kuberay"):
        raise UserError(f"--launch must be here, head or kuberay, got {launch!r}")
    cfg = config(options)
    cfg.tracking.tracking_uri = absolute_sqlite(cfg.tracking.tracking_uri)
    if launch == "head":
        cfg.launch = cfg.launch.model_copy(update={
            "backend": "local", "ray_address": ray_address,
            "tracking_uri": cfg.tracking.tracking_uri})  # fmt: skip
    uri = model_uri or cfg.tracking.champion_uri
    settings = Settings()
    source = data_path or settings.prediction_log_location(None)
    with stdout_for_result(as_json), err.status(f"checking {source} against {uri}"):
        report = run_monitor(cfg, source, uri, out, train_args if retrain else None,
                             cast(Where, launch), dry_run, settings, since, labels)  # fmt: skip
    emit(report, as_json, "monitoring report")
