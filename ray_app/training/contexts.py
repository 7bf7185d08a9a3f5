"""The runners' side of the loop (`LoopContext`): one process, or inside Ray.

A Ray Train worker and a Ray Tune trial differ only in the Ray module whose
`get_checkpoint` / `report` / `Checkpoint` they call, and in DDP wrapping of the model (Train's
workers form a process group; a trial is one process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ray_app.training.loop import read_checkpoint


@dataclass
class LocalContext:
    """Single process, no Ray: the plain PyTorch baseline and Katib trials."""

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

    def placement(self) -> list[dict[str, Any]]:
        return [{"rank": 0, "node_id": None, "pid": os.getpid()}]

    @property
    def wants_checkpoints(self) -> bool:
        return self.checkpoints


class RayContext:
    """Inside Ray: a Ray Train worker (`"train"`: DDP, ray.train.report) or a Ray Tune trial
    (`"tune"`: tune.report each epoch, the scheduler decides); resumes from the checkpoint
    Ray hands back after a restart."""

    def __init__(self, runner: Literal["train", "tune"]) -> None:
        import ray.train
        from ray import tune

        self.runner = runner
        self.api: Any = ray.train if runner == "train" else tune
        if runner == "train":
            ctx = ray.train.get_context()
            self.world_rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        else:
            self.world_rank, self.world_size = 0, 1

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.runner == "tune":
            return model
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def resume(self) -> dict[str, Any] | None:
        checkpoint = self.api.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return read_checkpoint(Path(directory))

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = self.api.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.api.report(metrics, checkpoint=checkpoint)

    def placement(self) -> list[dict[str, Any]]:
        """Every rank's Ray node and PID (rank order), gathered over the process group: the
        same list on each rank."""
        import ray
        import torch.distributed as dist

        me = {"rank": self.world_rank, "node_id": ray.get_runtime_context().get_node_id(),
              "pid": os.getpid()}  # fmt: skip
        if self.world_size == 1 or not dist.is_initialized():
            return [me]
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, me)
        return sorted(everyone, key=lambda w: int(w["rank"]))

    @property
    def wants_checkpoints(self) -> bool:
        return True
