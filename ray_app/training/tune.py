"""Ray Tune with ASHA over the shared search space; every trial runs the one training loop.

ray-app tune --num-samples 16            # search, then retrain the best with Ray Train
ray-app tune --name my-search --resume   # continue an interrupted search
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import mlflow

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.core.runtime import check_shared_storage
from ray_app.core.settings import Settings
from ray_app.tracking import store
from ray_app.training.contexts import RayContext
from ray_app.training.distributed import make_trainer
from ray_app.training.jobs import Progress, prepare_datasets, run_name, run_train_job
from ray_app.training.loop import OBJECTIVE, LoopSpec, train_loop
from ray_app.training.results import TuneResult
from ray_app.training.rows import worker_data
from ray_app.training.search import apply_params, search_space, trial_config, tune_param_space

PARENT_RUN_FILE = "mlflow_parent_run.json"


class SearchInterrupted(UserError):
    """The search stopped before every trial finished (Ctrl-C, a stop signal)."""


def mlflow_logger(tracking_uri: str, experiment: str, parent_id: str, search: str) -> Any:
    """Ray's MLflowLoggerCallback, made resumable: a trial restored by `--resume` keeps
    logging into the child run it had (found by its `trial_name` tag under the parent)
    instead of opening a second one."""
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class ResumableMLflowLogger(MLflowLoggerCallback):
        # Per resumed trial, the last epoch its child run already holds: the epoch in flight
        # at Ctrl-C may have been logged before Tune's snapshot held its checkpoint, and the
        # resumed trial reruns it; it is not logged twice.
        logged_up_to: ClassVar[dict[str, int]] = {}  # one logger per driver process

        def log_trial_start(self, trial: Any) -> None:
            if trial not in self._trial_runs:
                client = MlflowClient(tracking_uri)
                known = client.get_experiment_by_name(experiment)
                found = client.search_runs(
                    [known.experiment_id] if known else [],
                    filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
                    f"and tags.trial_name = '{trial}'",
                )
                if found:
                    run_id = found[0].info.run_id
                    self._trial_runs[trial] = run_id
                    steps = client.get_metric_history(run_id, "training_iteration")
                    self.logged_up_to[str(trial)] = max((m.step for m in steps), default=0)
            super().log_trial_start(trial)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            if result.get("training_iteration", 0) <= self.logged_up_to.get(str(trial), 0):
                return
            super().log_trial_result(iteration, trial, result)

    return ResumableMLflowLogger(
        tracking_uri=tracking_uri,
        experiment_name=experiment,
        tags={"mlflow.parentRunId": parent_id, "ray_app.search": search},
        save_artifact=False,
    )


def _trial(
    params: dict[str, Any],
    datasets: dict[str, Any],
    base: dict[str, Any],
    cardinalities: list[int],
    epoch_hook: str | None = None,
) -> None:
    """One Tune trial: the shared loop in-process, or a TorchTrainer reporting back to Tune.
    `epoch_hook`: the driver's RAY_APP_EPOCH_HOOK (read there: a trial's node has its own
    environment).

    Every trial reads the same materialized Datasets (blocks in the object store once).
    """
    cfg = trial_config(AppConfig.model_validate(base), params)
    workers = cfg.search.workers_per_trial
    if workers == 0:
        spec = LoopSpec(cfg.model, cfg.train, cardinalities, threads=cfg.ray.cpus_per_worker,
                        epoch_hook=epoch_hook)  # fmt: skip
        data = worker_data(
            datasets["train"].iterator(), datasets["val"].iterator(), cfg.ray.shard_cache_mb
        )
        train_loop(spec, data, RayContext("tune"))
        return
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg.ray.num_workers = workers
    name = f"{tune.get_context().get_trial_name()}-train"
    make_trainer(cfg, datasets, cardinalities, name, [TuneReportCallback()]).fit()


def trial_resources(cfg: AppConfig) -> dict[str, float]:
    """What a trial reserves: a CPU for an in-process trial, next to nothing for a distributed one.

    A distributed trial only coordinates: its TorchTrainer's controller asks for 0 CPUs and its
    worker group reserves a placement group of its own. Any CPU the trial held itself (0.01 was
    used) left a node that fraction short of a whole worker group: on 2 CPUs a 2-worker group
    never placed and Ray Train retried its start every 60 s for ever (the hang of the
    workers-per-trial test). Tune refuses an empty bundle, so the trial holds 1 byte of memory.
    """
    if cfg.search.workers_per_trial == 0:
        return {"CPU": cfg.ray.cpus_per_worker}
    return {"CPU": 0, "memory": 1}


def concurrent_trials(cfg: AppConfig) -> int:
    """Trials at once: `max_concurrent`, and for distributed trials no more worker groups than
    the cluster's CPUs (and GPUs) hold when the search starts.

    Tune cannot see the worker groups its trials start, so it would start trials whose groups
    then wait (Ray Train retries a start that finds no resources every 60 s). On an autoscaling
    cluster the cap is what is up at the start: set the worker group's minReplicas to cover it.
    """
    import ray

    search = cfg.search
    if search.workers_per_trial == 0:
        return search.max_concurrent
    total = ray.cluster_resources()
    caps = [int(total.get("CPU", 0) // (search.workers_per_trial * cfg.ray.cpus_per_worker))]
    if cfg.ray.use_gpu:
        caps.append(int(total.get("GPU", 0) // search.workers_per_trial))
    return max(1, min([search.max_concurrent, *caps]))


def run_search(cfg: AppConfig, datasets: dict[str, Any], cardinalities: list[int], name: str,
               callbacks: list[Any] | None = None) -> Any:  # fmt: skip
    """Run (or resume) the Tune experiment `name`; returns Tune's ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = cfg.search
    base = cfg.model_dump(mode="json")
    trainable = tune.with_parameters(
        _trial,
        datasets=datasets,
        base=base,
        cardinalities=cardinalities,
        epoch_hook=Settings().epoch_hook,
    )
    trainable = tune.with_resources(trainable, trial_resources(cfg))
    storage = Path(cfg.ray.storage_path).resolve()
    path = storage / name
    if search.resume:
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"{path}: no Tune experiment to resume")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        if search.scheduler == "asha":
            scheduler: Any = ASHAScheduler(
                time_attr="training_iteration",
                max_t=search.max_epochs,
                grace_period=search.grace_period,
                reduction_factor=search.reduction_factor,
            )
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space=tune_param_space(search_space(search.max_epochs)),
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode="min",
                scheduler=scheduler,
                num_samples=search.num_samples,
                # Seeded sampling: the same configs for the same seed (ASHA vs full budget).
                search_alg=BasicVariantGenerator(
                    random_state=search.seed, max_concurrent=concurrent_trials(cfg)
                ),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                callbacks=callbacks,
                verbose=0,
                # A trial whose process or node is lost starts again from its last checkpoint
                # (the ensemble's members do the same), instead of ending the trial as failed.
                failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            ),
        )
    return tuner.fit()


def summarise_grid(grid: Any) -> dict[str, Any]:
    """Epochs consumed, trials stopped early, best trial and its config."""
    trials = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or frame.empty:
            continue
        trials.append(
            {
                "epochs": int(frame["training_iteration"].max()),
                "best_val_log_loss": float(frame[OBJECTIVE].min()),
                "config": result.config,
                "error": None if result.error is None else str(result.error),
            }
        )
    if not trials:
        raise RuntimeError("the search produced no results")
    best = min(trials, key=lambda t: t["best_val_log_loss"])
    budget = max(t["config"]["max-epochs"] for t in trials)
    return {
        "trials": len(trials),
        "epochs_consumed": sum(t["epochs"] for t in trials),
        "full_budget_epochs": budget * len(trials),
        "stopped_early": sum(t["epochs"] < t["config"]["max-epochs"] for t in trials),
        "errored": sum(t["error"] is not None for t in trials),
        "best_val_log_loss": best["best_val_log_loss"],
        "best_config": best["config"],
    }


def run_tune_job(
    cfg: AppConfig,
    progress: Progress = lambda _: None,
    callbacks: list[Any] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TuneResult:
    """Search with ASHA (trials as nested MLflow runs), then retrain the best with Ray Train.

    Args:
        cfg: the config tree (`cfg.search` the search, the rest each trial's base).
        progress: told what the job is doing.
        callbacks: more Tune callbacks (the console's).
        on_epoch: the retrain's epochs, as they end.

    Returns:
        The search's summary and, with `cfg.search.retrain`, the retrained model's result.
    """
    check_shared_storage(cfg.ray.storage_path)
    progress("loading and validating data")
    prepared = prepare_datasets(cfg)
    pre, datasets = prepared.pre, prepared.encoded
    store.configure(cfg.tracking)
    name = cfg.search.name or run_name("tune")
    storage = Path(cfg.ray.storage_path).resolve() / name
    parent_file = storage / PARENT_RUN_FILE
    parent_id = None
    if cfg.search.resume and parent_file.exists():
        parent_id = json.loads(parent_file.read_text())["run_id"]

    with mlflow.start_run(run_id=parent_id, run_name=None if parent_id else name) as parent:
        storage.mkdir(parents=True, exist_ok=True)
        parent_file.write_text(json.dumps({"run_id": parent.info.run_id}))
        if parent_id is None:
            mlflow.log_params({f"search.{k}": v for k, v in cfg.search.model_dump().items()})
        callback = mlflow_logger(
            cfg.tracking.tracking_uri, cfg.tracking.experiment, parent.info.run_id, name
        )
        at_once = concurrent_trials(cfg)
        search = f"{cfg.search.num_samples} trials, {cfg.search.scheduler}, {at_once} at once"
        progress(f"searching: {search}")
        start = time.perf_counter()
        grid = run_search(cfg, datasets, pre.cardinalities, name, [callback, *(callbacks or [])])
        ended = grid.num_terminated + grid.num_errors
        if ended < cfg.search.num_samples:
            # Tune returns normally after a stop signal: a partial search must not look done.
            raise SearchInterrupted(
                f"search {name!r} interrupted: {ended} of {cfg.search.num_samples} trials "
                f"ended; its state is in {storage}. Continue it with: "
                f"ray-app tune --name {name} --resume (and the same options)"
            )
        summary = summarise_grid(grid)
        summary["concurrent_trials"] = at_once
        summary["search_wall_s"] = time.perf_counter() - start
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        mlflow.log_dict(summary, "search/summary.json")

    result = TuneResult(search=name, **summary, mlflow_parent_run_id=parent.info.run_id)
    if cfg.search.retrain:
        progress("retraining the best config with Ray Train")
        best_cfg = apply_params(cfg, summary["best_config"], search_space(cfg.search.max_epochs))
        retrained = run_train_job(
            best_cfg, progress, tags={"mlflow.parentRunId": parent.info.run_id}, on_epoch=on_epoch
        )
        result = result.model_copy(update={
            "retrained": retrained, "test_accuracy": retrained.test_accuracy,
            "test_log_loss": retrained.test_log_loss, "test_roc_auc": retrained.test_roc_auc,
            "test_f1": retrained.test_f1, "mlflow_run_id": retrained.mlflow_run_id,
            "model_version": retrained.model_version})  # fmt: skip
    return result
