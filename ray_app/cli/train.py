"""`ray-app data | train | evaluate | predict`: the data, a training run, a model's figures,
batch scoring."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_app.cli.console import (
    emit,
    err,
    print_epoch,
    say,
    session,
    stdout_for_result,
    train_summary,
)
from ray_app.cli.options import (
    ConfigOpt,
    JsonOpt,
    ModelUriOpt,
    Overrides,
    VerboseOpt,
    config,
    overrides,
)
from ray_app.core.config import plain_mlp
from ray_app.core.errors import UserError
from ray_app.core.redact import redact

app = typer.Typer()


@app.command()
@overrides("data")
def data(options: Overrides, as_json: JsonOpt = False) -> None:
    """Load and validate the data (layout, checksums, schema, overlap) and show the splits."""
    from ray_app.data.splits import load_splits, summarise

    cfg = config(options)
    with err.status("loading and validating data"):
        result = summarise(load_splits(cfg.data))
    emit(result, as_json, "data OK")


@app.command()
@overrides("data", "subsample", "train", "ray", "tracking")
def train(
    options: Overrides,
    model: Annotated[str, typer.Option(help="'plr' (default) or 'plain' (the seed's MLP)")] = "plr",
    config_file: ConfigOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train with Ray Train (DDP), evaluate on the test split, log and register in MLflow.

    Settings: the config tree's defaults (`ray-app config show`), then --config FILE, then
    the environment, then the options given here."""
    if model not in ("plr", "plain"):
        raise UserError(f"--model must be 'plr' or 'plain', got {model!r}")
    cfg = config(options, config_file)
    cfg = plain_mlp(cfg) if model == "plain" else cfg
    from ray_app.core.runtime import ensure_ray
    from ray_app.training.jobs import run_train_job

    with session(cfg.ray.storage_path, "train", verbose, as_json) as progress:
        progress("connecting to Ray")
        err.log(f"Ray: {ensure_ray(cfg.ray)}")
        members = None
        if cfg.train.ensemble > 1 and not verbose:
            from ray_app.cli.trial_console import TrialConsole

            members = [TrialConsole(cfg.train.ensemble, say, "member")]
        result = run_train_job(cfg, progress, on_epoch=None if verbose else print_epoch,
                               member_callbacks=members).to_json()  # fmt: skip
    if as_json or verbose:
        emit(result, as_json, "training finished")
    else:
        train_summary(result)
    if not as_json:
        store = redact(cfg.tracking.tracking_uri)
        say(f"MLflow: run {result['mlflow_run_id']} in {store} (mlflow ui "
            f"--backend-store-uri {store}); model "
            f"{result['registered_model']} v{result['model_version']}")  # fmt: skip


@app.command()
@overrides("data", "tracking")
def evaluate(options: Overrides, model_uri: ModelUriOpt = None, as_json: JsonOpt = False) -> None:
    """Score the test split (adult.test by default) with a logged or registered model."""
    from ray_app.training.jobs import run_evaluate_job

    cfg = config(options)
    uri = model_uri or cfg.tracking.champion_uri
    with stdout_for_result(as_json), err.status(f"evaluating {uri}"):
        result = run_evaluate_job(cfg, uri)
    emit(result.to_json(), as_json, "evaluation")


@app.command()
@overrides("tracking")
def predict(
    options: Overrides,
    data_path: Annotated[
        str, typer.Option("--data", help="file, folder, glob or URI of CSV / Parquet rows")
    ],
    out: Annotated[str, typer.Option(help="output folder (Parquet or CSV files)")],
    model_uri: ModelUriOpt = None,
    output_format: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    actors: Annotated[int, typer.Option(help="scoring actors (one CPU each)", min=1)] = 1,
    ray_address: Annotated[str | None, typer.Option(help="existing Ray cluster")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score files of any size with a registered model through Ray Data (batch scoring)."""
    if output_format not in ("parquet", "csv"):
        raise UserError(f"--format must be 'parquet' or 'csv', got {output_format!r}")
    from ray_app.serving.batch import predict_registered

    cfg = config({**options, "ray.address": ray_address})
    uri = model_uri or cfg.tracking.champion_uri
    with stdout_for_result(as_json), err.status(f"scoring {data_path} with {uri}"):
        result = predict_registered(cfg, uri, data_path, out, output_format, actors)
    emit(result, as_json, "batch scoring finished")
    if result["bad_rows"]:
        err.print(f"[yellow]{result['bad_rows']} invalid row(s) not scored, each with its "
                  f"reason in {result['bad_rows_file']}[/yellow]")  # fmt: skip
