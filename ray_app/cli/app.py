"""The `ray-app` command line: every entry point (Docker, RayJob, KFP, Katib) goes through here.

ray-app data                      # validate the shipped UCI files and show the splits
ray-app train --json              # 2 Ray Train workers -> test metrics -> MLflow registry
ray-app evaluate --model-uri models:/adult-income@champion
ray-app tune --num-samples 16             # Ray Tune + ASHA, retrain the best, register it
ray-app katib-trial --lr=0.001 ...        # one Katib trial, TEXT metrics file
ray-app serve                             # serve run of kuberay/serve-config.yaml
ray-app kube-manifests && ray-app kube-check      # KubeRay objects: generate, render, validate
ray-app mlflow-users                      # writer + read-only users on an MLflow server with auth
ray-app pipeline compile                  # Kubeflow Pipelines IR YAML
ray-app pipeline run --local --ray-address http://127.0.0.1:8265

Each command parses its options, builds the config tree and calls one function of the layers
below (ray_app.cli.* modules, one per command group).
"""

from __future__ import annotations

import sys

import typer

from ray_app.cli import config, kube, monitor, pipeline, serve, tracking, train, tune
from ray_app.cli.console import err
from ray_app.core.errors import UserError

app = typer.Typer(
    help="Train, tune and serve a PyTorch model for the UCI Adult income task on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for group in (train, tune, serve, kube, monitor, tracking):
    for command in group.app.registered_commands:
        app.registered_commands.append(command)
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(config.app, name="config")


def main() -> None:
    """Console-script entry: user errors print one line and exit 2, without a traceback."""
    try:
        app()
    except UserError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
