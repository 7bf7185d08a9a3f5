"""The retrain `ray-app monitor --retrain` starts on drift or a performance drop: the training
job, here (a local Ray), on a Ray head, or as the train RayJob. Its own champion rule decides
whether the new version is served."""

from __future__ import annotations

import shlex
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from ray_app.core.config import AppConfig, ServeConfig
from ray_app.core.errors import UserError
from ray_app.core.settings import Settings
from ray_app.platform.launch import Job, Launcher, job_name, make_launcher
from ray_app.platform.launch.here import HereJobs

Where = Literal["here", "head", "kuberay"]


def retrain(cfg: AppConfig, train_args: str, where: Where, dry_run: bool,
            settings: Settings) -> dict[str, Any]:  # fmt: skip
    """Start the training job (`train_args`: `ray-app train` options) `where` says; with
    `dry_run`, only say what would run."""
    job = Job("train", shlex.split(train_args), job_name("train"))
    here = HereJobs(cfg)
    command = shlex.join(here.command(job))
    on = {"here": "here", "head": "local", "kuberay": "kuberay"}[where]
    if dry_run:
        return {"started": False, "dry_run": True, "command": command, "on": on}
    launcher: Launcher | HereJobs = here if where == "here" else make_launcher(cfg, settings)
    result = launcher.run(job).result
    return {"started": True, "dry_run": False, "command": command,
            "model_version": result.get("model_version"),
            "champion": result.get("champion")}  # fmt: skip


def monitor(cfg: AppConfig, data: str | None, model_uri: str, out: Path | None,
            retrain_args: str | None, where: Where, dry_run: bool, settings: Settings,
            since: str | None = None, labels: str | None = None) -> dict[str, Any]:  # fmt: skip
    """`ray-app monitor`: the check, its report (folder, MLflow run), and with `retrain_args`
    (not None) the training job when the check says drift or a performance drop.

    Args:
        data: a prediction log's root, or a file/folder/glob/URI of rows; None: the log the
            serving graph writes (RAY_APP_PREDICTION_LOG, else <storage>/predictions).
        model_uri: the served model (an alias); a log's rows are judged against the
            reference of the version that scored them, a file's against this one.
        since: a log's window ('24h'); labels: a CSV/Parquet of request_id,income.
    Returns:
        The report (JSON-able): drift, performance, per-version figures, retrain.
    """
    import time

    from ray_app.data import predlog
    from ray_app.monitoring import monitor as checks
    from ray_app.monitoring import report as reports
    from ray_app.serving.config import model_uri_of
    from ray_app.tracking import store
    from ray_app.tracking.registry import pin, registry_bundle

    store.set_tracking(cfg.tracking)
    source = data or settings.prediction_log_location(None)
    assert source is not None  # location None never resolves to "off"
    if predlog.is_prediction_log(source):
        removed = []
        if cfg.monitor.retention_days is not None:
            removed = predlog.remove_older_than(source, cfg.monitor.retention_days)
        named = ServeConfig(model_uri=model_uri)

        def bundle_for(version: str) -> AbstractContextManager[Path]:
            return registry_bundle(model_uri_of(named, version))

        window = predlog.parse_since(since) if since else None
        report = checks.check_log(source, window, labels, bundle_for, cfg.monitor, cfg.ray)
        report["retention"] = {"days": cfg.monitor.retention_days, "removed": removed}
    else:
        if since or labels:
            raise UserError(f"{source}: --since and --labels apply to a prediction log (a "
                            "folder with records/), not to a file of rows")  # fmt: skip
        uri, version = pin(model_uri, None)
        with registry_bundle(uri) as bundle:
            report = checks.check(source, bundle, version, cfg.monitor)
    folder = out or Path("monitoring") / time.strftime("%Y%m%d-%H%M%S")
    reports.write_report(report, folder)
    report["report"] = str(folder)
    report["mlflow_run_id"] = reports.log_to_mlflow(report, folder, cfg.tracking.experiment)
    report["retrain"] = None
    if retrain_args is not None and report["retrain_needed"]:
        report["retrain"] = retrain(cfg, retrain_args, where, dry_run, settings)
    return reports.public(report)
