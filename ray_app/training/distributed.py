"""Ray Train: the loop on N workers (PyTorch DDP), checkpoints in shared storage, resume after
a worker is lost; the driver watches the epochs and fetches the best weights at the end."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.core.settings import Settings
from ray_app.ml.bundle import WEIGHTS
from ray_app.training.contexts import RayContext
from ray_app.training.loop import OBJECTIVE, TRAIN_META, LoopSpec, train_loop
from ray_app.training.rows import worker_data


@dataclass
class TrainOutcome:
    """What the driver gets back from a run: the best weights, the last meta (epoch, history)."""

    best_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    checkpoint_path: str
    wall_time_s: float
    run_name: str


def loop_spec(cfg: AppConfig, cardinalities: list[int], run_dir: Path) -> LoopSpec:
    """The loop's spec for a run persisted in `run_dir` (with the epoch hook the environment
    names, RAY_APP_EPOCH_HOOK: read here, on the driver, where the run starts)."""
    return LoopSpec(cfg.model, cfg.train, cardinalities, threads=cfg.ray.cpus_per_worker,
                    run_dir=str(run_dir), epoch_hook=Settings().epoch_hook)  # fmt: skip


def _ray_train_worker(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker: its shard of `train`, all of `val`."""
    import ray.train

    data = worker_data(ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val"),
                       config["cache_mb"])  # fmt: skip
    train_loop(config["spec"], data, RayContext("train"))


def make_trainer(
    cfg: AppConfig,
    datasets: dict[str, Any],
    cardinalities: list[int],
    run_name: str,
    callbacks: list[Any] | None = None,
) -> Any:
    """The one TorchTrainer definition: used by `ray-app train` and by distributed Tune trials.

    `datasets`: the materialized, encoded `train` (split into equal shards, one per worker)
    and `val` (given whole to every worker) Ray Datasets.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    # Train V2 propagates this to its controller; the default 2 s poll made each report ~1.3 s.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(cfg.ray.health_check_interval_s))
    storage = Path(cfg.ray.storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    spec = loop_spec(cfg, cardinalities, storage / run_name)
    return TorchTrainer(
        _ray_train_worker,
        train_loop_config={"spec": spec, "cache_mb": cfg.ray.shard_cache_mb},
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=OBJECTIVE, checkpoint_score_order="min"
            ),
            callbacks=callbacks,
        ),
    )


def watch_epochs(run_dir: Path, on_epoch: Callable[[dict], None], stop: threading.Event) -> None:
    """Driver side, in a thread: `on_epoch(metrics)` for each epoch, read from the history in
    the newest checkpoint Ray Train committed to the run folder (older ones may be deleted
    already), until `stop` (then a last look). Local storage only; for a URI the console
    shows the summary at the end."""
    seen: set[int] = set()
    while True:
        done = stop.wait(0.5)
        history: list[dict] = []
        for checkpoint in sorted(run_dir.glob("checkpoint_*"), reverse=True):
            try:
                history = json.loads((checkpoint / TRAIN_META).read_text())["history"]
                break
            except (OSError, ValueError, KeyError):
                continue  # not written completely yet, or removed meanwhile
        for metrics in history:
            epoch = int(metrics.get("epoch", 0))
            if epoch and epoch not in seen:
                seen.add(epoch)
                on_epoch(metrics)
        if done:
            return


def train_distributed(
    cfg: AppConfig,
    datasets: dict[str, Any],
    cardinalities: list[int],
    run_name: str,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainOutcome:
    """Run `train_loop` on `cfg.ray.num_workers` Ray Train workers (DDP); fetch the best model.
    `on_epoch` gets each epoch's metrics while it runs (local storage)."""
    import ray.train

    trainer = make_trainer(cfg, datasets, cardinalities, run_name)
    start = time.perf_counter()
    stop = threading.Event()
    watcher = None
    if on_epoch is not None and "://" not in str(cfg.ray.storage_path):
        run_dir = Path(cfg.ray.storage_path).resolve() / run_name
        watcher = threading.Thread(target=watch_epochs, args=(run_dir, on_epoch, stop),
                                   daemon=True)  # fmt: skip
        watcher.start()
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise RuntimeError(f"Ray Train run {run_name!r} failed: {exc}") from exc
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)
    wall = time.perf_counter() - start
    best = result.get_best_checkpoint(metric=OBJECTIVE, mode="min")
    latest = result.checkpoint
    if best is None or latest is None:
        raise UserError(f"Ray Train run {run_name!r} reported no checkpoint")
    best_state, meta = fetch(best, latest)
    return TrainOutcome(best_state, meta, best.path, wall, run_name)


def fetch(best: Any, latest: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights of the best checkpoint, and the meta (epoch, whole history) of the latest."""
    with best.as_directory() as directory:
        state = torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True)
    with latest.as_directory() as directory:
        meta = json.loads((Path(directory) / TRAIN_META).read_text())
    return state, meta
