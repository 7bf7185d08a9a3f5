"""`ray-app tune | katib-trial | katib-experiment`: hyperparameter search on Ray Tune, one
Katib trial, the Katib Experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.cli.console import emit, print_epoch, say, session, stdout_for_result
from ray_app.cli.options import ConfigOpt, JsonOpt, Overrides, VerboseOpt, config, overrides
from ray_app.core.constants import IMAGE
from ray_app.core.errors import UserError

app = typer.Typer()


@app.command()
@overrides("data", "subsample", "search", "ray", "tracking")
def tune(options: Overrides, config_file: ConfigOpt = None, verbose: VerboseOpt = False,
         as_json: JsonOpt = False) -> None:  # fmt: skip
    """Search with Ray Tune + ASHA (each trial an MLflow run), retrain the best, register it."""
    cfg = config(options, config_file)
    if cfg.search.resume and not cfg.search.name:
        raise UserError("--resume needs --name of the search to continue")
    from ray_app.cli.trial_console import TrialConsole
    from ray_app.core.runtime import ensure_ray
    from ray_app.training.tune import run_tune_job

    with session(cfg.ray.storage_path, "tune", verbose, as_json) as progress:
        ensure_ray(cfg.ray)
        result = run_tune_job(
            cfg,
            progress,
            callbacks=None if verbose else [TrialConsole(cfg.search.num_samples, say)],
            on_epoch=None if verbose else print_epoch,
        )
    emit(result.to_json(), as_json, "search finished")


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("katib-trial", context_settings=EXTRA_ARGS)
@overrides("data", "subsample")
def katib_trial(
    options: Overrides,
    ctx: typer.Context,
    metrics_file: Annotated[Path, typer.Option(help="Katib File collector path")] = Path(
        "/mnt/katib/metrics"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Run one trial with the shared loop; write Katib TEXT metrics (--lr=... --batch-size=...)."""
    from ray_app.training.katib import parse_trial_args, run_katib_trial

    params = parse_trial_args(ctx.args)
    cfg = config(options)
    with stdout_for_result(as_json):
        result = run_katib_trial(cfg, params, metrics_file)
    emit(result, as_json, "trial finished")


@app.command("katib-experiment")
def katib_experiment(
    out_dir: Annotated[Path, typer.Option(help="where the Experiment YAML goes")] = Path("katib"),
    image: Annotated[str, typer.Option(help="trial image")] = IMAGE,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "kubeflow",
) -> None:
    """Write the Katib Experiments (random + medianstop, hyperband) built from the search space."""
    from ray_app.platform.katib import write_experiments

    for path in write_experiments(out_dir, image=image, namespace=namespace):
        typer.echo(str(path))
