"""A training process's rows: its shard of the Ray Dataset (or all rows, in one process),
cached in memory as arrays when they fit, else streamed from the object store each epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.core.schema import LABEL_COLUMN
from ray_app.data.splits import Splits, load_splits
from ray_app.ml.features import Preprocessor


def writable(a: np.ndarray) -> torch.Tensor:
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
        cat, num, y = writable(self.train_cat), writable(self.train_num), writable(self.train_y)
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


def worker_data(train: Any, val: Any, cache_mb: float) -> EncodedData | StreamedData:
    """A worker's rows: cached in memory when they fit in `cache_mb`, else streamed."""
    cached = EncodedData.from_iterators(train, val, cache_mb * 2**20)
    if cached is not None:
        return cached
    val_arrays = _gather(val)
    assert val_arrays is not None
    return StreamedData(train, *val_arrays)


def prepare_data(cfg: AppConfig) -> tuple[Splits, Preprocessor, EncodedData]:
    """In this process (Katib trials, the plain loop): load and validate, fit preprocessing on
    the training split, encode train/validation."""
    splits = load_splits(cfg.data)
    pre = Preprocessor.fit(splits.train, cfg.features)
    return splits, pre, EncodedData.from_splits(splits, pre)
