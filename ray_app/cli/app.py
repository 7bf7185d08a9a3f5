"""The `ray-app` command line: every entry point (Docker, RayJob, KFP, Katib) goes through here.

ray-app data                      # validate the shipped UCI files and show the splits
ray-app train --json              # 2 Ray Train workers -> test metrics -> MLflow registry
ray-app evaluate --model-uri models:/adult-income@champion
ray-app tune --num-samples 16             # Ray Tune + ASHA, retrain the best, register it
ray-app katib-trial --lr=0.001 ...        # one Katib trial, TEXT metrics file
ray-app serve                             # serve run of kuberay/serve-config.yaml
ray-app kube-manifests && ray-app kube-check      # KubeRay objects: generate, render, validate
ray-app pipeline compile                  # Kubeflow Pipelines IR YAML
ray-app pipeline run --local --ray-address http://127.0.0.1:8265
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from ray_app.core.config import IMAGE, AppConfig, dump_config, load_config_file, plain_mlp
from ray_app.core.errors import UserError

app = typer.Typer(
    help="Train, tune and serve a PyTorch model for the UCI Adult income task on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, log_path=False)

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="your data: a file, folder, glob or URI (s3://, gs://, file://) of CSV (UCI, "
        "Kaggle adult.csv or OpenML header), Parquet or raw UCI files; without --test-data "
        "it is split into train/validation/test (default: the shipped data/adult.data)",
    ),
]
TestDataOpt = Annotated[
    str | None,
    typer.Option(
        "--test-data",
        help="test file (default: data/adult.test for the shipped data, else a split of --data)",
    ),
]
TestFractionOpt = Annotated[
    float | None,
    typer.Option(help="share of --data held out as the test split when no --test-data (0.2)"),
]
MaxOverlapOpt = Annotated[
    float | None,
    typer.Option(
        help="largest share of test rows that may repeat training rows; above it the run "
        "stops before training (0.01)"
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="RAY_APP_DATA_DIR",
        help="folder with the shipped UCI files (default: the repository's data/)",
    ),
]
StorageOpt = Annotated[
    Path | None,
    typer.Option(
        "--storage-path",
        envvar="RAY_APP_STORAGE_PATH",
        help="Ray Train/Tune storage: checkpoints (shared by every node on a cluster)",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the result as one JSON object on stdout")
]
TrackingOpt = Annotated[
    str, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI")
]
TrackingOptional = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                 help="MLflow tracking URI [sqlite:///mlflow.db]"),
]  # fmt: skip
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", help="Ray's own log lines on the console, not in a file")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML of the config tree (`ray-app config show`); "
                 "options given on the command line override it"),
]  # fmt: skip
ModelUriOpt = Annotated[str, typer.Option(help="MLflow model URI or registry alias")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="existing Ray cluster (default: local)"
    ),
]


@contextlib.contextmanager
def _stdout_for_result(as_json: bool) -> Iterator[None]:
    """With --json, anything libraries print (Ray Tune's tables) goes to stderr instead."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _ray_output_to_file(log: Path | None) -> Iterator[None]:
    """Everything but this command's own console goes to `log`: Ray's and Ray Train's INFO
    lines, Ray Data's progress, worker logs, library warnings (the process's stdout and stderr
    file descriptors, so output from C++ and child processes too). None: no redirection."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    previous = err.file
    err.file = terminal
    try:
        with log.open("ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                import ray

                if ray.is_initialized():  # its last worker lines land in the log, not after
                    ray.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
        err.file = previous
        terminal.close()


def _log_path(cfg: AppConfig, kind: str) -> Path:
    """Where a run's Ray output goes: <storage>/logs/ (a temp folder for URI storage)."""
    return _log_file(str(cfg.ray.storage_path), kind)


def _log_file(storage: str, kind: str) -> Path:
    """<storage>/logs/<kind>-<time>.log (a temp folder for URI storage)."""
    import tempfile
    import time

    base = Path(tempfile.gettempdir()) if "://" in storage else Path(storage).resolve()
    return base / "logs" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _say(text: str) -> None:
    err.print(text, highlight=False, soft_wrap=True)  # paths stay whole, on one line


def _print_epoch(metrics: dict[str, Any]) -> None:
    """One console line per epoch, as Ray Train commits it."""
    err.print(
        f"  epoch {int(metrics['epoch']):>2}  loss {metrics['train_loss']:.4f}  "
        f"val loss {metrics['val_log_loss']:.4f}  acc {metrics['val_accuracy']:.4f}  "
        f"AUC {metrics.get('val_roc_auc', float('nan')):.4f}  {metrics['epoch_time_s']:.1f} s",
        highlight=False,
    )


def _train_summary(result: dict[str, Any]) -> None:
    """The figures a person wants after `ray-app train` (the whole result: --json)."""
    from rich.table import Table

    table = Table(title="test split", title_justify="left", show_edge=False)
    for column in ("", "accuracy", "log loss", "ROC-AUC", "F1"):
        table.add_column(column, justify="right" if column else "left")
    for i, member in enumerate(result.get("members", [])):
        table.add_row(f"member {i} (seed {member['seed']})", *(
            f"{member[k]:.4f}" for k in ("accuracy", "log_loss", "roc_auc", "f1")))  # fmt: skip
    n = result.get("ensemble_members", 1)
    table.add_row("this model" if n == 1 else f"ensemble of {n}", *(f"{result[f'test_{k}']:.4f}"
                  for k in ("accuracy", "log_loss", "roc_auc", "f1")))  # fmt: skip
    if "gbdt_test_accuracy" in result:
        table.add_row("HistGradientBoosting", *(
            f"{result[f'gbdt_test_{k}']:.4f}" if f"gbdt_test_{k}" in result else "-"
            for k in ("accuracy", "log_loss", "roc_auc", "f1")))  # fmt: skip
    err.print(table)
    champion = result.get("champion") or {}
    if result.get("model_version") is None:
        model = "model not registered"
    elif champion.get("promoted"):
        model = f"model {result['registered_model']} v{result['model_version']}: champion"
    else:
        model = (f"model {result['registered_model']} v{result['model_version']}: not promoted "
                 f"(champion stays v{champion.get('champion_version')})")  # fmt: skip
    epochs = (f"{result['epochs_run']} epochs in {n} members" if n > 1 else
              f"best epoch {result['best_epoch']} of {result['epochs_run']}")  # fmt: skip
    err.print(f"{epochs}, {result['train_wall_time_s']:.0f} s of training; {model}",
              highlight=False)  # fmt: skip


def _emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    err.print(f"[bold]{title}[/bold]")
    for key, value in result.items():
        typer.echo(f"{key}: {value}")


def _absolute_sqlite(tracking_uri: str) -> str:
    """sqlite:///mlflow.db -> sqlite:////abs/mlflow.db, for processes in other directories."""
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(tracking_uri.removeprefix("sqlite:///")).resolve())
    return tracking_uri


def _build_config(config_file: Path | None = None, **sections: dict[str, Any]) -> AppConfig:
    """Validate into the typed tree: the tree's defaults, then the config file's values, then
    the options given on the command line (None: not given). A bad value is a user error
    naming the file and the field, not a traceback."""
    tree = load_config_file(config_file) if config_file else {}
    for section, values in sections.items():
        given = {f: x for f, x in values.items() if x is not None}
        if given:
            base = tree.get(section) or {}
            if not isinstance(base, dict):
                raise UserError(f"{config_file}: '{section}' must be a mapping of settings")
            tree[section] = {**base, **given}
    try:
        return AppConfig(**tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        where = f" ({config_file} and the options given)" if config_file else ""
        raise UserError(f"invalid configuration{where}: {problems}") from None


def _data(
    train_path: str | None,
    test_path: str | None,
    test_fraction: float | None,
    max_test_overlap: float | None,
    data_dir: Path | None,
    subsample: int | None = None,
) -> dict[str, Any]:
    """The `data` section from the options every data-reading command shares."""
    return {
        "train_path": train_path,
        "test_path": test_path,
        "test_fraction": test_fraction,
        "max_test_overlap": max_test_overlap,
        "data_dir": data_dir,
        "subsample": subsample,
    }


@app.command()
def data(
    data_path: DataOpt = None,
    test_data: TestDataOpt = None,
    test_fraction: TestFractionOpt = None,
    max_test_overlap: MaxOverlapOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load and validate the data (layout, checksums, schema, overlap) and show the splits."""
    from ray_app.data.files import load_splits, summarise

    cfg = _build_config(data=_data(data_path, test_data, test_fraction, max_test_overlap, data_dir))
    with err.status("loading and validating data"):
        result = summarise(load_splits(cfg.data))
    _emit(result, as_json, "data OK")


@app.command()
def train(
    data_path: DataOpt = None,
    test_data: TestDataOpt = None,
    test_fraction: TestFractionOpt = None,
    max_test_overlap: MaxOverlapOpt = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers (DDP) [2]", min=1)] = None,
    cpus_per_worker: Annotated[
        int | None, typer.Option(help="CPUs (and torch threads) per worker [1]", min=1)
    ] = None,
    use_gpu: Annotated[bool | None, typer.Option(help="one GPU per worker [no]")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="global batch size")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    model: Annotated[str, typer.Option(help="'plr' (default) or 'plain' (the seed's MLP)")] = "plr",
    subsample: Annotated[int | None, typer.Option(help="train on N rows only (quick runs)")] = None,
    seed: Annotated[int | None, typer.Option(help="training seed [0]")] = None,
    ensemble: Annotated[
        int | None,
        typer.Option(
            help="K > 1: a deep ensemble of K members (seeds seed..seed+K-1), trained at "
            "once as Ray Tune trials, registered as one model [1]",
            min=1,
        ),
    ] = None,
    max_failures: Annotated[
        int | None, typer.Option(help="worker failures to recover from [2]")
    ] = None,
    storage_path: StorageOpt = None,
    data_dir: DataDirOpt = None,
    ray_address: RayAddressOpt = None,
    tracking_uri: TrackingOptional = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment")] = None,
    registered_model: Annotated[str | None, typer.Option(help="MLflow registered model")] = None,
    register: Annotated[bool | None, typer.Option(help="register a model version [yes]")] = None,
    fail_once_at_epoch: Annotated[int | None, typer.Option(hidden=True)] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train with Ray Train (DDP), evaluate on the test split, log and register in MLflow.

    Settings: the config tree's defaults (`ray-app config show`), then --config FILE, then
    the options given here."""
    if model not in ("plr", "plain"):
        raise UserError(f"--model must be 'plr' or 'plain', got {model!r}")
    train_section: dict[str, Any] = {"seed": seed, "fail_once_at_epoch": fail_once_at_epoch}
    for key, value in (("max_epochs", epochs), ("batch_size", batch_size), ("lr", lr),
                       ("ensemble", ensemble)):  # fmt: skip
        if value is not None:
            train_section[key] = value
    cfg = _build_config(
        config,
        data=_data(data_path, test_data, test_fraction, max_test_overlap, data_dir, subsample),
        train=train_section,
        ray={
            "address": ray_address,
            "num_workers": workers,
            "cpus_per_worker": cpus_per_worker,
            "use_gpu": use_gpu,
            "max_failures": max_failures,
            "storage_path": storage_path,
        },
        tracking={
            "tracking_uri": tracking_uri,
            "experiment": experiment,
            "registered_model": registered_model,
            "register_model": register,
        },
    )
    if model == "plain":
        cfg = plain_mlp(cfg)
    from ray_app.core.runtime import ensure_ray
    from ray_app.training.jobs import run_train_job

    log = None if verbose else _log_path(cfg, "train")
    if log is not None:
        _say(f"Ray's own output: {log} (--verbose: here)")
    with _stdout_for_result(as_json), _ray_output_to_file(log), err.status("starting") as status:

        def progress(message: str) -> None:
            status.update(message)
            err.log(message)

        progress("connecting to Ray")
        where = ensure_ray(cfg.ray)
        err.log(f"Ray: {where}")
        members = None
        if cfg.train.ensemble > 1 and not verbose:
            from ray_app.cli.trial_console import TrialConsole

            members = [TrialConsole(cfg.train.ensemble, _say, "member")]
        result = run_train_job(cfg, progress, on_epoch=None if verbose else _print_epoch,
                               member_callbacks=members)  # fmt: skip
    if as_json or verbose:
        _emit(result, as_json, "training finished")
    else:
        _train_summary(result)
    if not as_json:
        err.print(
            f"MLflow: run {result['mlflow_run_id']} in {cfg.tracking.tracking_uri} "
            f"(mlflow ui --backend-store-uri {cfg.tracking.tracking_uri}); "
            f"model {result['registered_model']} v{result['model_version']}",
            soft_wrap=True,
        )


@app.command()
def tune(
    data_path: DataOpt = None,
    test_data: TestDataOpt = None,
    test_fraction: TestFractionOpt = None,
    max_test_overlap: MaxOverlapOpt = None,
    num_samples: Annotated[int | None, typer.Option(help="trials to sample [16]", min=1)] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="trials at once [2]", min=1)] = None,
    max_epochs: Annotated[
        int | None, typer.Option(help="epoch budget per trial (ASHA max_t) [16]")
    ] = None,
    grace_period: Annotated[int | None, typer.Option(help="ASHA grace period (epochs) [2]")] = None,
    reduction_factor: Annotated[int | None, typer.Option(help="ASHA reduction factor [3]")] = None,
    scheduler: Annotated[str | None, typer.Option(help="'asha' or 'fifo' (full budget)")] = None,
    workers_per_trial: Annotated[
        int | None, typer.Option(help="0: loop inside the trial (fastest here); N: TorchTrainer")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Ray Train workers for the retrain [2]", min=1)
    ] = None,
    subsample: Annotated[int | None, typer.Option(help="train on N rows only")] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed [0]")] = None,
    name: Annotated[str | None, typer.Option(help="search name (folder under storage)")] = None,
    resume: Annotated[bool, typer.Option(help="continue the interrupted search --name")] = False,
    retrain: Annotated[
        bool | None, typer.Option(help="retrain and register the best config [yes]")
    ] = None,
    storage_path: StorageOpt = None,
    data_dir: DataDirOpt = None,
    ray_address: RayAddressOpt = None,
    tracking_uri: TrackingOptional = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Search with Ray Tune + ASHA (each trial an MLflow run), retrain the best, register it."""
    if resume and not name:
        raise UserError("--resume needs --name of the search to continue")
    cfg = _build_config(
        config,
        data=_data(data_path, test_data, test_fraction, max_test_overlap, data_dir, subsample),
        ray={"address": ray_address, "num_workers": workers, "storage_path": storage_path},
        tracking={"tracking_uri": tracking_uri},
        search={
            "num_samples": num_samples,
            "max_concurrent": max_concurrent,
            "max_epochs": max_epochs,
            "grace_period": grace_period,
            "reduction_factor": reduction_factor,
            "scheduler": scheduler,
            "workers_per_trial": workers_per_trial,
            "seed": seed,
            "name": name,
            "resume": resume or None,
            "retrain": retrain,
        },
    )
    from ray_app.cli.trial_console import TrialConsole
    from ray_app.core.runtime import ensure_ray
    from ray_app.training.tune import run_tune_job

    log = None if verbose else _log_path(cfg, "tune")
    if log is not None:
        _say(f"Ray's own output: {log} (--verbose: here)")
    with _stdout_for_result(as_json), _ray_output_to_file(log), err.status("starting") as status:

        def progress(message: str) -> None:
            status.update(message)
            err.log(message)

        ensure_ray(cfg.ray)
        quiet = log is not None
        result = run_tune_job(
            cfg,
            progress,
            callbacks=[TrialConsole(cfg.search.num_samples, _say)] if quiet else None,
            on_epoch=_print_epoch if quiet else None,
        )
    _emit(result, as_json, "search finished")


@app.command(
    "katib-trial",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def katib_trial(
    ctx: typer.Context,
    metrics_file: Annotated[Path, typer.Option(help="Katib File collector path")] = Path(
        "/mnt/katib/metrics"
    ),
    data_path: DataOpt = None,
    test_data: TestDataOpt = None,
    test_fraction: TestFractionOpt = None,
    max_test_overlap: MaxOverlapOpt = None,
    subsample: Annotated[int | None, typer.Option(help="train on N rows only")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one trial with the shared loop; write Katib TEXT metrics (--lr=... --batch-size=...)."""
    from ray_app.training.katib import parse_trial_args, run_katib_trial

    params = parse_trial_args(ctx.args)
    cfg = _build_config(
        data=_data(data_path, test_data, test_fraction, max_test_overlap, data_dir, subsample)
    )
    with _stdout_for_result(as_json):
        result = run_katib_trial(cfg, params, metrics_file)
    _emit(result, as_json, "trial finished")


@app.command("katib-experiment")
def katib_experiment(
    out_dir: Annotated[Path, typer.Option(help="where the Experiment YAML goes")] = Path("katib"),
    image: Annotated[str, typer.Option(help="trial image")] = IMAGE,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "kubeflow",
) -> None:
    """Write the Katib Experiments (random + medianstop, hyperband) built from the search space."""
    from ray_app.training.katib import write_experiments

    for path in write_experiments(out_dir, image=image, namespace=namespace):
        typer.echo(str(path))


SERVE_CONFIG = Path("kuberay/serve-config.yaml")


@app.command("serve-config")
def serve_config_cmd(
    out: Annotated[Path, typer.Option(help="where to write the Serve config")] = SERVE_CONFIG,
) -> None:
    """Write the Serve config (the document `serve run` and the RayService use)."""
    from ray_app.serving.graph import render_config, serve_config

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_config(serve_config()))
    typer.echo(str(out))


@app.command("kube-manifests")
def kube_manifests(
    base_dir: Annotated[Path, typer.Option(help="Kustomize base folder")] = Path("kuberay/base"),
    serve_config_out: Annotated[Path, typer.Option(help="Serve config")] = SERVE_CONFIG,
) -> None:
    """Write the generated KubeRay objects (RayCluster, RayJobs, RayService) and Serve config."""
    from ray_app.platform.manifests import write_manifests

    for path in write_manifests(base_dir, serve_config_out):
        typer.echo(str(path))


@app.command("kube-check")
def kube_check(
    kuberay_dir: Annotated[Path, typer.Option(help="folder with base/ and overlays/")] = Path(
        "kuberay"
    ),
    crds: Annotated[
        Path,
        typer.Option(envvar="RAY_APP_KUBERAY_CRDS", help="KubeRay v1.7 CRD folder"),
    ] = Path("../shared/kuberay/crds"),
) -> None:
    """Render every overlay and validate each object: CRD schemas, KubeRay's admission rules,
    core schemas; and every RayJob the pipeline's launcher can build from the overlay."""
    from ray_app.platform.kubecheck import check_overlay, load_crd_schemas, overlays

    schemas = load_crd_schemas(crds)
    found = overlays(kuberay_dir)
    if not found:
        raise UserError(f"{kuberay_dir}/overlays: no overlay with a kustomization.yaml")
    from ray_app.platform.kuberules import ALL_RULES, KUBERAY_TAG

    typer.echo(f"KubeRay {KUBERAY_TAG}: CRD schemas (strict) + {len(ALL_RULES)} admission rules")
    failed = False
    for overlay in found:
        report = check_overlay(overlay, schemas)
        status = "FAIL" if report.errors else "ok"
        launched = f", {len(report.launcher)} launcher RayJobs" if report.launcher else ""
        typer.echo(f"{status}  {overlay}: {len(report.objects)} objects{launched}")
        for problem in report.errors:
            typer.echo(f"      {problem}")
        failed = failed or bool(report.errors)
    if failed:
        raise typer.Exit(1)


@app.command()
def predict(
    data_path: Annotated[
        str, typer.Option("--data", help="file, folder, glob or URI of CSV / Parquet rows")
    ],
    out: Annotated[str, typer.Option(help="output folder (Parquet or CSV files)")],
    model_uri: ModelUriOpt = "models:/adult-income@champion",
    tracking_uri: TrackingOpt = "sqlite:///mlflow.db",
    output_format: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    actors: Annotated[int, typer.Option(help="scoring actors (one CPU each)", min=1)] = 1,
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score files of any size with a registered model through Ray Data (batch scoring)."""
    if output_format not in ("parquet", "csv"):
        raise UserError(f"--format must be 'parquet' or 'csv', got {output_format!r}")
    import mlflow

    from ray_app.core.runtime import ensure_ray
    from ray_app.data.raydata import predict_files
    from ray_app.tracking.registry import pin, registry_bundle

    cfg = _build_config(ray={"address": ray_address}, tracking={"tracking_uri": tracking_uri})
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    uri, version = pin(model_uri, None)
    bundle = registry_bundle(uri)
    with _stdout_for_result(as_json), err.status(f"scoring {data_path} with {uri}"):
        ensure_ray(cfg.ray)
        result = predict_files(data_path, out, str(bundle), version, output_format, actors)
    _emit(result, as_json, "batch scoring finished")
    if result["bad_rows"]:
        err.print(f"[yellow]{result['bad_rows']} invalid row(s) not scored, each with its "
                  f"reason in {result['bad_rows_file']}[/yellow]")  # fmt: skip


@app.command("release-assets")
def release_assets_cmd(
    image: Annotated[str, typer.Option(help="pushed repository, e.g. ghcr.io/owner/ray-app")],
    digest: Annotated[str, typer.Option(help="digest of the pushed CPU image (sha256:...)")],
    gpu_digest: Annotated[str, typer.Option(help="digest of the pushed GPU image")],
    out: Annotated[Path, typer.Option(help="folder for the assets")] = Path("dist"),
    kuberay_dir: Annotated[Path, typer.Option(help="folder with overlays/")] = Path("kuberay"),
) -> None:
    """Pipeline, Katib Experiments and rendered overlays, every image pinned to the digests."""
    from ray_app.platform.release import release_assets

    for path in release_assets(out, image, digest, gpu_digest, kuberay_dir):
        typer.echo(str(path))


@app.command()
def serve(
    model_uri: ModelUriOpt = "models:/adult-income@champion",
    bundle_dir: Annotated[Path | None, typer.Option(help="local model bundle instead")] = None,
    tracking_uri: TrackingOpt = "sqlite:///mlflow.db",
    host: Annotated[str, typer.Option(help="HTTP host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    ray_address: RayAddressOpt = None,
) -> None:
    """`serve run` the Serve config locally (a local Ray is started), on embedded defaults."""
    import os
    import shutil
    import tempfile

    from ray_app.serving.graph import SERVE_ENV, ServeArgs, render_config, serve_config

    # Replicas do not share this process's working directory.
    tracking_uri = _absolute_sqlite(tracking_uri)
    args = ServeArgs(
        model_uri=model_uri,
        bundle_dir=str(bundle_dir.resolve()) if bundle_dir else None,
        tracking_uri=tracking_uri,
    )
    doc = serve_config(args, host=host, port=port)
    path = Path(tempfile.mkdtemp(prefix="ray_app_serve_")) / "serve-config.yaml"
    path.write_text(render_config(doc))
    serve_bin = shutil.which("serve") or str(Path(sys.executable).parent / "serve")
    err.print(f"serve run {path}  ->  http://{host}:{port}/docs")
    # "local": a fresh Ray, never the cluster a leftover /tmp/ray/ray_current_cluster names
    # (serve run's own default joins it, and hangs for minutes when that head is dead).
    address = ray_address or "local"
    os.execve(serve_bin, [serve_bin, "run", "--address", address, str(path)],
              {**os.environ, **SERVE_ENV})  # fmt: skip


@app.command()
def deploy(
    model_uri: Annotated[
        str, typer.Argument(help="the version to serve: models:/adult-income/3 or an alias")
    ],
    local: Annotated[
        bool, typer.Option("--local", help="a Ray head's Serve REST API (else the RayService)")
    ] = False,
    ray_address: Annotated[
        str, typer.Option(help="--local: the Ray head's dashboard URL")
    ] = "http://127.0.0.1:8265",
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow store (default: ./mlflow.db --local, the in-cluster one else)"),
    ] = None,
    serve_port: Annotated[int, typer.Option(help="--local: Serve HTTP port")] = 8000,
    as_json: JsonOpt = False,
) -> None:
    """Serve a registered version in place (rollout or rollback): the pipeline's deploy step.

    Only the pinned version changes in the Serve config, so Serve reconfigures the running
    replicas (no restart, no request refused); returns once /health names the version.
    """
    from ray_app.platform.pipeline import default_launch, deploy_step

    if local:
        store = _absolute_sqlite(tracking_uri or "sqlite:///mlflow.db")
        launch = {"backend": "local", "ray_address": ray_address, "serve_port": serve_port,
                  "tracking_uri": store}  # fmt: skip
    else:
        launch = default_launch()
        if tracking_uri:  # e.g. a port-forwarded in-cluster MLflow
            launch["tracking_uri"] = tracking_uri
    with _stdout_for_result(as_json), err.status(f"deploying {model_uri}"):
        result = deploy_step(launch, model_uri)
    _emit(result, as_json, "deployed")


@app.command()
def monitor(
    data_path: Annotated[
        str, typer.Option("--data", help="file, folder, glob or URI of recent rows (CSV/Parquet)")
    ],
    model_uri: ModelUriOpt = "models:/adult-income@champion",
    tracking_uri: TrackingOpt = "sqlite:///mlflow.db",
    threshold: Annotated[float, typer.Option(help="PSI above which a feature drifted")] = 0.2,
    out: Annotated[Path | None, typer.Option(help="report folder")] = None,
    retrain: Annotated[bool, typer.Option(help="on drift or a performance drop, train")] = False,
    dry_run: Annotated[bool, typer.Option(help="--retrain: say what would run")] = False,
    train_args: Annotated[str, typer.Option(help="--retrain: `ray-app train` options")] = "",
    launch: Annotated[
        str, typer.Option(help="--retrain on: here (a local Ray), head (--ray-address), kuberay")
    ] = "here",
    ray_address: Annotated[
        str, typer.Option(help="--launch head: the Ray head's dashboard URL")
    ] = "http://127.0.0.1:8265",
    as_json: JsonOpt = False,
) -> None:
    """Drift (PSI per feature and score) and live performance against the training reference."""
    import time

    import mlflow

    from ray_app.monitoring import monitor as mon
    from ray_app.core.config import TrackingConfig
    from ray_app.platform.pipeline import default_launch
    from ray_app.tracking.registry import pin, registry_bundle

    if launch not in ("here", "head", "kuberay"):
        raise UserError(f"--launch must be here, head or kuberay, got {launch!r}")
    tracking_uri = _absolute_sqlite(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    uri, version = pin(model_uri, None)
    with _stdout_for_result(as_json), err.status(f"checking {data_path} against {uri}"):
        report = mon.check(data_path, registry_bundle(uri), version, threshold)
        folder = out or Path("monitoring") / time.strftime("%Y%m%d-%H%M%S")
        mon.write_report(report, folder)
        report["report"] = str(folder)
        report["mlflow_run_id"] = mon.log_to_mlflow(report, folder, TrackingConfig().experiment)
        report["retrain"] = None
        if retrain and report["retrain_needed"]:
            target = None
            if launch == "head":
                target = {"backend": "local", "ray_address": ray_address,
                          "tracking_uri": tracking_uri}  # fmt: skip
            elif launch == "kuberay":
                target = default_launch()
            report["retrain"] = mon.retrain(tracking_uri, train_args, target, dry_run)
    _emit(mon.public(report), as_json, "monitoring report")


@app.command()
def evaluate(
    model_uri: ModelUriOpt = "models:/adult-income@champion",
    test_data: TestDataOpt = None,
    data_dir: DataDirOpt = None,
    tracking_uri: TrackingOpt = "sqlite:///mlflow.db",
    as_json: JsonOpt = False,
) -> None:
    """Score the official test split with a logged or registered model."""
    from ray_app.training.jobs import run_evaluate_job

    cfg = _build_config(
        data={"test_path": test_data, "data_dir": data_dir},
        tracking={"tracking_uri": tracking_uri},
    )
    with _stdout_for_result(as_json), err.status(f"evaluating {model_uri}"):
        result = run_evaluate_job(cfg, model_uri)
    _emit(result, as_json, "evaluation")


pipeline_app = typer.Typer(help="The Kubeflow Pipelines (v2) pipeline.", no_args_is_help=True)
config_app = typer.Typer(help="The typed configuration tree.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration: the tree's defaults, with --config FILE applied."""
    typer.echo(dump_config(_build_config(config)), nl=False)


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="IR YAML to write")] = Path(
        "pipelines/adult_income.yaml"
    ),
    image: Annotated[str, typer.Option(help="image of every step")] = IMAGE,
) -> None:
    """Compile the pipeline to IR YAML (upload it to Kubeflow Pipelines)."""
    from ray_app.platform.pipeline import compile_pipeline

    typer.echo(str(compile_pipeline(out, image)))


@pipeline_app.command("run")
def pipeline_run(
    local: Annotated[
        bool, typer.Option("--local", help="run every step here (kfp.local), Ray jobs on a head")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Kubeflow Pipelines endpoint")] = None,
    ray_address: Annotated[
        str, typer.Option(help="--local: the Ray head's dashboard URL")
    ] = "http://127.0.0.1:8265",
    tracking_uri: TrackingOpt = "sqlite:///mlflow.db",
    storage_path: StorageOpt = Path("ray_results"),
    train_args: Annotated[str, typer.Option(help="extra `ray-app train` options")] = "",
    tune: Annotated[bool, typer.Option(help="also search with Ray Tune (ASHA)")] = False,
    tune_args: Annotated[str, typer.Option(help="extra `ray-app tune` options")] = "",
    serve_port: Annotated[int, typer.Option(help="--local: Serve HTTP port")] = 8000,
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
    verbose: Annotated[
        bool, typer.Option("--verbose", help="--local: every step's output here, not in a log")
    ] = False,
) -> None:
    """Run the pipeline: --local on this machine against a Ray head, or --host on Kubeflow."""
    from ray_app.platform.pipeline import build_pipeline, default_launch, plain_text, run_local

    if local == bool(host):
        raise UserError("give exactly one of --local or --host")
    if local:
        launch = {
            "backend": "local",
            "ray_address": ray_address,
            # The Ray job runs in another working directory.
            "tracking_uri": _absolute_sqlite(tracking_uri),
            "storage_path": str((storage_path or Path("ray_results")).resolve()),
            "serve_port": serve_port,
            "poll_s": 2.0,
        }
        log = None if verbose else _log_file(str(launch["storage_path"]), "pipeline")
        if log is not None:
            _say(f"Step output (kfp.local, Ray jobs): {log}")
        try:
            with _ray_output_to_file(log):
                ended = run_local(
                    launch, pipeline_root.resolve(), train_args, tune, tune_args, say=_say
                )
        except RuntimeError as exc:  # kfp.local: "Task 'x' finished with status FAILURE"
            where = f"; its output is in {log}" if log else ""
            plain = plain_text(str(exc)).rstrip(".")
            raise UserError(f"pipeline failed: {plain}{where}") from None
        deployed = any(task == "deploy-op" for task, _ in ended)
        _say(f"pipeline finished: {len(ended)} steps, "
             + ("new champion deployed" if deployed else "serving unchanged"))  # fmt: skip
        _say(f"MLflow: {launch['tracking_uri']}; outputs under {pipeline_root.resolve()}")
        return
    import kfp

    # Single-user KFP runs every step in its own namespace (`kubeflow`) whatever a run asks;
    # multi-user KFP runs them in the Profile namespace. Either way the steps' account gets
    # the launcher's Role in ray-app from kuberay/kfp/{single,multi}-user.
    account = service_account or ("default-editor" if namespace else "ray-app-pipeline")
    client = kfp.Client(host=host, namespace=namespace or "kubeflow")
    run = client.create_run_from_pipeline_func(
        build_pipeline(),
        namespace=namespace,
        service_account=account,
        arguments={
            "launch": default_launch(),
            "train_args": train_args,
            "run_tune": tune,
            "tune_args": tune_args,
        },
    )
    typer.echo(f"run {run.run_id} on {host}")


def main() -> None:
    """Console-script entry: user errors print one line and exit 2, without a traceback."""
    try:
        app()
    except UserError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
