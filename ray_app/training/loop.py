"""The training loop, written once.

`train_loop` is called by every runner: Ray Train workers (`ray-app train`), Ray Tune trials
(`ray-app tune`, ensemble members), Katib trials (`ray-app katib-trial`) and the plain
single-process benchmark. Runners differ only in the `LoopContext` they pass
(`ray_app.training.contexts`): rank and world size, how a model is wrapped, how metrics and
checkpoints are reported, and where a resumed run's state comes from.
"""

from __future__ import annotations

import importlib
import json
import math
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ray_app.core.config import ModelConfig, TrainConfig
from ray_app.core.schema import predicted
from ray_app.ml.binary import f1, roc_auc
from ray_app.ml.bundle import WEIGHTS, build_model
from ray_app.training.rows import EncodedData, StreamedData, writable

TRAIN_STATE = "train_state.pt"
TRAIN_META = "train_meta.json"
OBJECTIVE = "val_log_loss"
# Validation rows per forward pass: one pass over a large split would hold every row's PLR
# embedding at once (gigabytes at 100x Adult).
EVAL_ROWS = 32_768


@dataclass(frozen=True)
class EpochEvent:
    """What an epoch hook is told after each epoch's training step (before validation)."""

    epoch: int
    rank: int
    world_size: int
    seed: int
    run_dir: str | None  # where the runner persists this run (checkpoints), when it does


EpochHook = Callable[[EpochEvent], None]


@dataclass
class LoopSpec:
    """Everything the loop needs besides data: plain, picklable, sent to each worker."""

    model: ModelConfig
    train: TrainConfig
    cardinalities: list[int]
    threads: int = 1
    run_dir: str | None = None
    # `module:function` called with an EpochEvent after each epoch (RAY_APP_EPOCH_HOOK):
    # instrumentation, and the tests' fault injection. None in normal use.
    epoch_hook: str | None = None


class LoopContext(Protocol):
    """What a runner provides to `train_loop`."""

    world_rank: int
    world_size: int

    def prepare(self, model: nn.Module) -> nn.Module: ...

    def resume(self) -> dict[str, Any] | None: ...

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None: ...

    def placement(self) -> list[dict[str, Any]]: ...

    @property
    def wants_checkpoints(self) -> bool: ...


@dataclass
class LoopResult:
    """Final meta (epoch, history, early-stopping state) and the best weights seen here."""

    meta: dict[str, Any]
    best_state: dict[str, torch.Tensor] | None


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself: DDP keeps it in `.module`."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, nn.Module)
    return inner


def write_checkpoint(directory: Path, model: nn.Module, optimizer: Any, meta: dict) -> Path:
    """Checkpoint = weights (state dict), optimizer state, and JSON meta (epoch, history)."""
    torch.save(unwrap(model).state_dict(), directory / WEIGHTS)
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


def load_hook(path: str | None) -> EpochHook | None:
    """The callable a `module:function` names (None: no hook)."""
    if not path:
        return None
    module, _, name = path.partition(":")
    hook: EpochHook = getattr(importlib.import_module(module), name)
    return hook


def evaluate(model: nn.Module, x_cat: torch.Tensor, x_num: torch.Tensor, y: np.ndarray) -> dict:
    """Validation log loss, accuracy, F1 and ROC-AUC of the model on encoded rows."""
    y_t = torch.from_numpy(np.require(y, requirements="W"))
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([unwrap(model)(x_cat[i : i + EVAL_ROWS], x_num[i : i + EVAL_ROWS])
                            for i in range(0, len(y_t), EVAL_ROWS)])  # fmt: skip
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y_t).item()
        prob = torch.sigmoid(logits).numpy()
    if not np.isfinite(loss):
        raise FloatingPointError(f"validation log loss is {loss}: training diverged")
    pred = predicted(prob)
    return {
        "val_log_loss": float(loss),
        "val_accuracy": float((pred == y).mean()),
        "val_f1": f1(y, pred),
        "val_roc_auc": roc_auc(y, prob),
    }


def _train_epoch(model: nn.Module, optimizer: Any, data: EncodedData | StreamedData, seed: int,
                 batch: int) -> tuple[float, int]:  # fmt: skip
    """One pass over this process's rows (its equal shard under DDP), reshuffled with `seed`;
    returns (mean training loss, rows)."""
    model.train()
    total, rows = 0.0, 0
    for x_cat, x_num, y in data.epoch_batches(seed, batch):
        loss = nn.functional.binary_cross_entropy_with_logits(model(x_cat, x_num), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        rows += len(y)
    return total / max(1, rows), rows


def _set_lr(optimizer: Any, cfg: TrainConfig, epoch: int) -> None:
    """Cosine: per-epoch decay to 0 over max_epochs (a resumed run recomputes it)."""
    if cfg.lr_schedule == "cosine":
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.max_epochs))


def _early_stopping(meta: dict[str, Any], metrics: dict[str, float]) -> bool:
    """Record the epoch in `meta`; True if it improved on the best validation loss."""
    best = meta["best_val_log_loss"]
    improved = best is None or metrics[OBJECTIVE] < best - 1e-6
    meta["best_val_log_loss"] = metrics[OBJECTIVE] if improved else best
    meta["bad_epochs"] = 0 if improved else meta["bad_epochs"] + 1
    meta["epoch"] = int(metrics["epoch"])
    meta["history"].append(metrics)
    return improved


def train_loop(spec: LoopSpec, data: EncodedData | StreamedData, ctx: LoopContext) -> LoopResult:
    """Train with early stopping on val_log_loss; report every epoch (with a checkpoint from
    rank 0 when the runner keeps them); resume from the runner's last checkpoint."""
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.train.seed)
    cfg, hook = spec.train, load_hook(spec.epoch_hook)
    model = ctx.prepare(build_model(spec.model, spec.cardinalities))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    meta: dict[str, Any] = {"epoch": 0, "history": [], "best_val_log_loss": None, "bad_epochs": 0}
    best_state: dict[str, torch.Tensor] | None = None
    state = ctx.resume()
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        meta = state["meta"]
    # Each start of the workers (the first, then every restart after a lost worker or node)
    # with where its ranks run: kept in the checkpoints' meta, so the driver sees them all.
    # A restart that is lost again before its first checkpoint leaves no entry.
    meta.setdefault("worker_groups", []).append(
        {"resumed_from_epoch": meta["epoch"], "workers": ctx.placement()}
    )
    local_batch = max(1, cfg.batch_size // ctx.world_size)  # global batch stays cfg.batch_size
    val_cat, val_num = writable(data.val_cat), writable(data.val_num)
    for epoch in range(meta["epoch"] + 1, cfg.max_epochs + 1):
        if meta["bad_epochs"] >= cfg.patience:
            break
        start = time.perf_counter()
        _set_lr(optimizer, cfg, epoch)
        train_loss, rows = _train_epoch(model, optimizer, data, cfg.seed * 100_003 + epoch,
                                        local_batch)  # fmt: skip
        train_time = time.perf_counter() - start
        if hook is not None:
            hook(EpochEvent(epoch, ctx.world_rank, ctx.world_size, cfg.seed, spec.run_dir))
        metrics = evaluate(model, val_cat, val_num, data.val_y)
        metrics.update(
            epoch=epoch, train_loss=train_loss, train_time_s=train_time,
            epoch_time_s=time.perf_counter() - start,
            epoch_end_unix=time.time(),  # wall clock, for start-up vs per-epoch accounting
            rows=rows, workers=ctx.world_size,  # this worker's training rows this epoch
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )  # fmt: skip
        if _early_stopping(meta, metrics):
            best_state = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
        if ctx.wants_checkpoints and ctx.world_rank == 0:
            with tempfile.TemporaryDirectory(prefix="ray_app_ckpt_") as tmp:
                ctx.report(metrics, write_checkpoint(Path(tmp), model, optimizer, meta))
        else:
            ctx.report(metrics, None)
    # After a resume the best weights may predate this process: then the checkpoints hold them.
    return LoopResult(meta, best_state)
