"""The training loop (written once) and its Ray Train launcher.

`train_loop` is called by every runner: Ray Train workers (`ray-app train`), Ray Tune trials
(`ray-app tune`), Katib trials (`ray-app katib-trial`) and the plain single-process benchmark.
Runners differ only in the `LoopContext` they pass: rank/world size, how a model is wrapped,
how metrics and checkpoints are reported, and where a resumed run's state comes from.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn

from ray_app.core.config import AppConfig, ModelConfig, TrainConfig
from ray_app.core.errors import UserError
from ray_app.data.files import LABEL_COLUMN, Splits
from ray_app.ml.bundle import WEIGHTS, build_model
from ray_app.ml.features import Preprocessor

TRAIN_STATE = "train_state.pt"
TRAIN_META = "train_meta.json"
OBJECTIVE = "val_log_loss"
EVAL_ROWS = 32_768


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _writable(a: np.ndarray) -> torch.Tensor:
    # Arrays from Ray's object store are read-only; torch wants writable memory.
    return torch.from_numpy(np.require(a, requirements="W"))


@dataclass
class EncodedData:
    """Model-ready arrays of this process's training rows and of the validation split.

    In a Ray Train worker the training rows are the worker's own shard of the Dataset (each
    worker a disjoint, equal share); in one process (a Tune trial, Katib, the plain loop) all
    of them. Each epoch reshuffles them with a seed derived from the epoch.
    """

    train_cat: np.ndarray
    train_num: np.ndarray
    train_y: np.ndarray
    val_cat: np.ndarray
    val_num: np.ndarray
    val_y: np.ndarray

    @classmethod
    def from_splits(cls, splits: Splits, pre: Preprocessor) -> EncodedData:
        train_cat, train_num = pre.transform(splits.train)
        val_cat, val_num = pre.transform(splits.val)
        return cls(
            train_cat,
            train_num,
            splits.train[LABEL_COLUMN].to_numpy(np.float32),
            val_cat,
            val_num,
            splits.val[LABEL_COLUMN].to_numpy(np.float32),
        )

    @classmethod
    def from_iterators(cls, train: Any, val: Any, limit_bytes: float = float("inf")) -> Any:
        """Cache a Ray Data iterator's rows (x_cat, x_num, y batches) in memory; None if they
        do not fit in `limit_bytes` (the caller streams them instead)."""
        val_arrays = _gather(val)
        train_arrays = _gather(train, limit_bytes)
        if val_arrays is None or train_arrays is None:
            return None
        return cls(*train_arrays, *val_arrays)

    @property
    def n_rows(self) -> int:
        return len(self.train_y)

    def epoch_batches(self, seed: int, batch: int) -> Any:
        """This epoch's shuffled batches of (x_cat, x_num, y)."""
        cat, num, y = _writable(self.train_cat), _writable(self.train_num), _writable(self.train_y)
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(self.n_rows))
        for i in range(0, self.n_rows, batch):
            idx = perm[i : i + batch]
            yield cat[idx], num[idx], y[idx]


def _gather(iterator: Any, limit_bytes: float = float("inf")) -> tuple | None:
    parts: dict[str, list[np.ndarray]] = {"x_cat": [], "x_num": [], "y": []}
    size = 0
    for batch in iterator.iter_batches(batch_format="numpy", batch_size=65_536):
        for key, part in parts.items():
            part.append(batch[key])
            size += batch[key].nbytes
        if size > limit_bytes:
            return None
    if not parts["y"]:
        raise UserError("a Ray Train worker got no rows: fewer rows than workers?")
    return tuple(np.concatenate(parts[k]) for k in ("x_cat", "x_num", "y"))


@dataclass
class StreamedData:
    """A shard too big to cache: streamed from the object store each epoch, shuffled through
    a local buffer seeded by the epoch. Validation rows are cached (one split, not sharded)."""

    shard: Any
    val_cat: np.ndarray
    val_num: np.ndarray
    val_y: np.ndarray
    shuffle_buffer: int = 20_000

    def epoch_batches(self, seed: int, batch: int) -> Any:
        for b in self.shard.iter_torch_batches(
            batch_size=batch, local_shuffle_buffer_size=self.shuffle_buffer,
            local_shuffle_seed=seed,
        ):  # fmt: skip
            yield b["x_cat"], b["x_num"], b["y"]


@dataclass
class LoopSpec:
    """Everything the loop needs besides data: plain, picklable, sent to each worker."""

    model: ModelConfig
    train: TrainConfig
    cardinalities: list[int]
    threads: int = 1
    fault_marker: str | None = None  # test-only: file that records an injected failure
    fault_after_commit: bool = True  # test-only: crash once Ray Train committed the last epoch


class LoopContext(Protocol):
    """What a runner provides to `train_loop`."""

    world_rank: int
    world_size: int

    def prepare(self, model: nn.Module) -> nn.Module: ...

    def resume(self) -> dict[str, Any] | None: ...

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None: ...

    @property
    def wants_checkpoints(self) -> bool: ...


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DDP keeps the real model in .module
    assert isinstance(inner, nn.Module)
    return inner


def write_checkpoint(directory: Path, model: nn.Module, optimizer: Any, meta: dict) -> Path:
    """Checkpoint = weights (state dict), optimizer state, and JSON meta (epoch, history)."""
    torch.save(_unwrap(model).state_dict(), directory / WEIGHTS)
    torch.save(optimizer.state_dict(), directory / TRAIN_STATE)
    (directory / TRAIN_META).write_text(json.dumps(meta))
    return directory


def read_checkpoint(directory: Path) -> dict[str, Any]:
    """Inverse of write_checkpoint; weights_only loading (no arbitrary unpickling)."""
    return {
        "model": torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True),
        "optimizer": torch.load(directory / TRAIN_STATE, map_location="cpu", weights_only=True),
        "meta": json.loads((directory / TRAIN_META).read_text()),
    }


def _wait_for_committed_checkpoint(run_dir: Path, epoch: int, timeout_s: float = 60) -> None:
    """Test-only fault injection: crash only once the controller has committed the checkpoint
    of `epoch` (Ray Train lists it in checkpoint_manager_snapshot.json). An epoch lasts ~60 ms
    on test data, less than the controller's poll: crashing earlier loses that report, which
    is Ray's documented behaviour, not the resume this injection exists to exercise."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while epoch > 0 and time.monotonic() < deadline:
        try:
            results = json.loads(snapshot.read_text()).get("checkpoint_results", [])
            if any(r.get("metrics", {}).get("epoch") == epoch for r in results):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)


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


def _evaluate(model: nn.Module, x_cat: torch.Tensor, x_num: torch.Tensor, y: np.ndarray) -> dict:
    y_t = torch.from_numpy(np.require(y, requirements="W"))
    model.eval()
    with torch.inference_mode():
        # In chunks: one forward pass over a large validation split would hold every row's
        # PLR embedding at once (gigabytes at 100x Adult).
        logits = torch.cat([_unwrap(model)(x_cat[i : i + EVAL_ROWS], x_num[i : i + EVAL_ROWS])
                            for i in range(0, len(y_t), EVAL_ROWS)])  # fmt: skip
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y_t).item()
        prob = torch.sigmoid(logits).numpy()
    pred = (prob >= 0.5).astype(np.float32)
    if not np.isfinite(loss):
        raise FloatingPointError(f"validation log loss is {loss}: training diverged")
    return {
        "val_log_loss": float(loss),
        "val_accuracy": float((pred == y).mean()),
        "val_f1": float(f1_score(y, pred, zero_division=0)),
        "val_roc_auc": float(roc_auc_score(y, prob)),
    }


@dataclass
class LoopResult:
    """Final meta (epoch, history, early-stopping state) and the best weights seen here."""

    meta: dict[str, Any]
    best_state: dict[str, torch.Tensor] | None


def train_loop(spec: LoopSpec, data: EncodedData | StreamedData, ctx: LoopContext) -> LoopResult:
    """Train with early stopping on val_log_loss; report every epoch."""
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.train.seed)
    cfg = spec.train
    model = ctx.prepare(build_model(spec.model, spec.cardinalities))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    meta: dict[str, Any] = {"epoch": 0, "history": [], "best_val_log_loss": None, "bad_epochs": 0}

    best_state: dict[str, torch.Tensor] | None = None
    state = ctx.resume()
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        meta = state["meta"]

    local_batch = max(1, cfg.batch_size // ctx.world_size)  # global batch stays cfg.batch_size
    val_cat, val_num = _writable(data.val_cat), _writable(data.val_num)

    for epoch in range(meta["epoch"] + 1, cfg.max_epochs + 1):
        if meta["bad_epochs"] >= cfg.patience:
            break
        start = time.perf_counter()
        if cfg.lr_schedule == "cosine":  # per-epoch decay; a resumed run recomputes it
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.max_epochs))
        model.train()
        total, rows = 0.0, 0
        # This worker's rows (its equal shard under DDP), reshuffled with a per-epoch seed.
        for x_cat, x_num, y in data.epoch_batches(cfg.seed * 100_003 + epoch, local_batch):
            logits = model(x_cat, x_num)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            rows += len(y)
        train_time = time.perf_counter() - start
        if (
            spec.fault_marker
            and epoch == cfg.fail_once_at_epoch
            and ctx.world_rank == ctx.world_size - 1
        ):
            marker = Path(spec.fault_marker)
            if not marker.exists():
                if spec.fault_after_commit:
                    _wait_for_committed_checkpoint(marker.parent, epoch - 1)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"worker {ctx.world_rank} killed itself at epoch {epoch}\n")
                os._exit(1)  # a hard crash, as if the node were lost
        metrics = _evaluate(model, val_cat, val_num, data.val_y)
        metrics.update(
            epoch=epoch,
            train_loss=total / max(1, rows),
            train_time_s=train_time,
            epoch_time_s=time.perf_counter() - start,
            epoch_end_unix=time.time(),  # wall clock, for start-up vs per-epoch accounting
            rows=rows,  # this worker's training rows this epoch
            workers=ctx.world_size,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
        best = meta["best_val_log_loss"]
        improved = best is None or metrics[OBJECTIVE] < best - 1e-6
        meta["best_val_log_loss"] = metrics[OBJECTIVE] if improved else best
        if improved:
            best_state = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}
        meta["bad_epochs"] = 0 if improved else meta["bad_epochs"] + 1
        meta["epoch"] = epoch
        meta["history"].append(metrics)
        if ctx.wants_checkpoints and ctx.world_rank == 0:
            with tempfile.TemporaryDirectory(prefix="ray_app_ckpt_") as tmp:
                ctx.report(metrics, write_checkpoint(Path(tmp), model, optimizer, meta))
        else:
            ctx.report(metrics, None)
    # After a resume the best weights may predate this process: then the checkpoints hold them.
    return LoopResult(meta, best_state)


# ---- runners --------------------------------------------------------------------------------
@dataclass
class LocalContext:
    """Single process, no Ray: the plain PyTorch baseline and in-process trials."""

    world_rank: int = 0
    world_size: int = 1
    on_report: Any = None  # optional callable(metrics, checkpoint_dir)
    checkpoints: bool = False
    reports: list[dict[str, float]] = field(default_factory=list)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def resume(self) -> dict[str, Any] | None:
        return None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.reports.append(metrics)
        if self.on_report is not None:
            self.on_report(metrics, checkpoint_dir)

    @property
    def wants_checkpoints(self) -> bool:
        return self.checkpoints


class RayTrainContext:
    """Inside a Ray Train worker: DDP wrapping, ray.train.report, resume from get_checkpoint."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.world_rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def prepare(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def resume(self) -> dict[str, Any] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return read_checkpoint(Path(directory))

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    @property
    def wants_checkpoints(self) -> bool:
        return True


class TuneTrialContext:
    """An in-process Ray Tune trial: tune.report each epoch (ASHA decides), resume from Tune."""

    world_rank = 0
    world_size = 1

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def resume(self) -> dict[str, Any] | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return read_checkpoint(Path(directory))

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    @property
    def wants_checkpoints(self) -> bool:
        return True


def worker_data(train: Any, val: Any, cache_mb: float) -> EncodedData | StreamedData:
    """A worker's rows: cached in memory when they fit in `cache_mb`, else streamed."""
    cached = EncodedData.from_iterators(train, val, cache_mb * 2**20)
    if cached is not None:
        return cached
    val_arrays = _gather(val)
    assert val_arrays is not None
    return StreamedData(train, *val_arrays)


def _ray_train_worker(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker: its shard of `train`, all of `val`."""
    import ray.train

    data = worker_data(
        ray.train.get_dataset_shard("train"),
        ray.train.get_dataset_shard("val"),
        config["cache_mb"],
    )
    train_loop(config["spec"], data, RayTrainContext())


@dataclass
class TrainOutcome:
    """What the driver gets back from a distributed fit."""

    best_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    checkpoint_path: str
    wall_time_s: float
    run_name: str


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
    marker = None
    if cfg.train.fail_once_at_epoch is not None:
        marker = str(storage / run_name / "fault_injected.txt")
    spec = LoopSpec(
        model=cfg.model,
        train=cfg.train,
        cardinalities=cardinalities,
        threads=cfg.ray.cpus_per_worker,
        fault_marker=marker,
    )
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
                num_to_keep=2,
                checkpoint_score_attribute=OBJECTIVE,
                checkpoint_score_order="min",
            ),
            callbacks=callbacks,
        ),
    )


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
    best_state, meta = _fetch(best, latest)
    return TrainOutcome(best_state, meta, best.path, wall, run_name)


def _fetch(best: Any, latest: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights of the best checkpoint, and the meta (epoch, whole history) of the latest."""
    with best.as_directory() as directory:
        state = torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True)
    with latest.as_directory() as directory:
        meta = json.loads((Path(directory) / TRAIN_META).read_text())
    return state, meta


def _member_trial(params: dict[str, Any], datasets: dict[str, Any], spec: LoopSpec,
                  cache_mb: float, crash_seed: int) -> None:  # fmt: skip
    """One ensemble member: the shared loop in a Tune trial, with the member's seed (the
    test-only fault injection hits the member with `crash_seed`; Tune's report has persisted
    the previous epoch's checkpoint when the loop goes on, so no commit to wait for)."""
    fault = spec.fault_marker if params["seed"] == crash_seed else None
    train = spec.train.model_copy(update={"seed": params["seed"]})
    member = LoopSpec(spec.model, train, spec.cardinalities, spec.threads, fault, False)
    data = worker_data(datasets["train"].iterator(), datasets["val"].iterator(), cache_mb)
    train_loop(member, data, TuneTrialContext())


def train_members(
    cfg: AppConfig,
    datasets: dict[str, Any],
    cardinalities: list[int],
    run_name: str,
    callbacks: list[Any] | None = None,
) -> list[TrainOutcome]:
    """A deep ensemble: `cfg.train.ensemble` members with seeds seed, seed+1, ..., each the
    one training loop in a Ray Tune trial of its own (`cpus_per_worker` CPUs; as many at once
    as the cluster holds), early-stopped on its own validation loss; a member whose process
    dies resumes from its last checkpoint. Returns the members in seed order.

    Trials, not a TorchTrainer per member: a member is one process (DDP would only split a
    26k-row epoch), so a trial skips Ray Train's worker-group start (12-14 s here) and Tune
    packs members onto whatever CPUs the cluster has. The data are the same materialized
    Datasets Tune trials read (`worker_data`)."""
    from ray import tune

    storage = Path(cfg.ray.storage_path).resolve()
    marker = None
    if cfg.train.fail_once_at_epoch is not None:
        marker = str(storage / run_name / "fault_injected.txt")
    spec = LoopSpec(cfg.model, cfg.train, cardinalities, cfg.ray.cpus_per_worker, marker)
    seeds = [cfg.train.seed + i for i in range(cfg.train.ensemble)]
    trainable = tune.with_parameters(_member_trial, datasets=datasets, spec=spec,
                                     cache_mb=cfg.ray.shard_cache_mb,
                                     crash_seed=seeds[-1])  # fmt: skip
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": cfg.ray.cpus_per_worker}),
        param_space={"seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="min"),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(storage),
            callbacks=callbacks,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=OBJECTIVE, checkpoint_score_order="min"
            ),
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    outcomes = []
    results = [grid[i] for i in range(len(grid))]
    for result in sorted(results, key=lambda r: int((r.config or {})["seed"])):
        seed = int((result.config or {})["seed"])
        best = result.get_best_checkpoint(OBJECTIVE, "min")
        if result.error is not None or best is None or result.checkpoint is None:
            raise RuntimeError(f"ensemble member seed {seed} ({run_name}) failed: {result.error}")
        state, meta = _fetch(best, result.checkpoint)
        outcomes.append(TrainOutcome(state, {**meta, "seed": seed}, best.path, wall, run_name))
    return outcomes
