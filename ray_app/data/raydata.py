"""Ray Data: from files (a path, folder, glob or URI; CSV, Parquet or raw UCI) to the Datasets
Ray Train workers and Tune trials read, without the driver ever holding the rows.

    files --(one Ray task per file: read + resolve columns + validate, vectorised)--> blocks
          --(the split plan, computed on the driver from the labels alone)--> train/val/test
          --(preprocessor fitted from merged per-block value counts)--> encoded Datasets,
            materialized in the object store once, before any Train worker starts

The same functions as the in-process path (`ray_app.data.splits.load_splits`): `read_file`,
`plan_splits`, `check_overlap`, and the same value counts (`ray_app.data.stats`) the
preprocessor is fitted on. So the shipped data gives the same rows in each split and the same
preprocessor, whichever path read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.config import DataConfig
from ray_app.core.errors import DataError
from ray_app.core.schema import LABEL_COLUMN
from ray_app.data.files import list_files, read_file
from ray_app.data.splits import (
    check_overlap,
    combine_overlap,
    describe_layout,
    feature_hashes,
    overlap_mask,
    plan_splits,
    record_test_source,
    resolve_sources,
)
from ray_app.data.stats import column_stats, merge_stats


@dataclass
class SplitDatasets:
    """Raw (validated, canonical columns) train / val / test Datasets and their provenance."""

    train: Any
    val: Any
    test: Any
    provenance: dict[str, Any]
    labels: dict[str, np.ndarray]  # per split: 1 byte a row, for summaries and stratification
    train_stats: dict[str, Any] | None = None  # value counts of the training split, when counted

    def sizes(self) -> dict[str, int]:
        return {name: len(labels) for name, labels in self.labels.items()}

    def label_arrays(self) -> dict[str, np.ndarray]:
        return self.labels


def _read_remote() -> Any:
    import ray

    @ray.remote(num_returns=2)
    def read(path: str, test_hashes: np.ndarray | None) -> tuple[Any, dict[str, Any]]:
        """One file: read, resolve, validate; the table, and what the driver needs to plan."""
        import pyarrow as pa

        frame, layout = read_file(path)
        meta: dict[str, Any] = {
            "path": path,
            "rows": len(frame),
            "labels": frame[LABEL_COLUMN].to_numpy(np.int8),
            "layout": layout,
        }
        if test_hashes is not None:  # the overlap guard: which test rows occur in this file
            meta["overlap"] = overlap_mask(test_hashes, frame)
        else:
            meta["hashes"] = feature_hashes(frame)
        return pa.Table.from_pandas(frame, preserve_index=False), meta

    return read


def _plan_remote() -> Any:
    import ray

    @ray.remote(num_cpus=1)
    def plan(labels: np.ndarray, cfg: DataConfig, test_from_file: bool) -> Any:
        return plan_splits(labels, cfg, test_from_file)

    return plan


def _take_remote() -> Any:
    import ray

    @ray.remote(num_returns=3)
    def take(table: Any, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> tuple:
        return table.take(train), table.take(val), table.take(test)

    return take


def get(refs: Any) -> Any:
    """ray.get, with a user error raised in a task (a bad file) raised as itself: one clear
    line, not a remote traceback."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, DataError):
            raise exc.cause from None
        raise


def _read_all(source: str, test_hashes: Any = None) -> tuple[list[Any], list[dict[str, Any]]]:
    read = _read_remote()
    pairs = [read.remote(path, test_hashes) for path in list_files(source)]
    tables = [table for table, _ in pairs]
    return tables, list(get([meta for _, meta in pairs]))


def load_datasets(cfg: DataConfig) -> SplitDatasets:
    """`load_splits` with Ray Data: the same rows per split, never on the driver."""
    import ray

    sources = resolve_sources(cfg)
    provenance = sources.provenance
    test_hashes = None
    if sources.test is not None:
        test_tables, test_meta = _read_all(sources.test)
        describe_layout(provenance, "test", test_meta[0]["layout"], sources.test)
        test_hashes = ray.put(np.concatenate([m["hashes"] for m in test_meta]))
    tables, meta = _read_all(sources.train, test_hashes)
    describe_layout(provenance, "train", meta[0]["layout"], sources.train)
    labels = np.concatenate([m["labels"] for m in meta])
    record_test_source(labels, sources, cfg)
    if sources.test is not None:
        overlap = combine_overlap([m["overlap"] for m in meta])
        n_test = sum(m["rows"] for m in test_meta)
        provenance["test_overlap"] = check_overlap(overlap, n_test, sources, cfg)
    # In a task: sklearn's stratified split needs ~80 bytes a row while it runs, which would
    # be most of the driver's memory at 100x; the driver keeps the int32 indices it returns.
    plan = get(_plan_remote().remote(labels, cfg, sources.test is not None))
    # Global row indices -> each file's own, keeping the order the split took them in.
    offsets = np.cumsum([0, *(m["rows"] for m in meta)])
    take = _take_remote()
    parts: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    empty = np.array([], dtype=np.int64)
    for i, table in enumerate(tables):
        local = {}
        for name in ("train", "val", "test"):
            rows = getattr(plan, name)
            rows = empty if rows is None else rows
            mine = rows[(rows >= offsets[i]) & (rows < offsets[i + 1])]
            local[name] = mine - offsets[i]
        refs = take.remote(table, local["train"], local["val"], local["test"])
        for name, ref in zip(("train", "val", "test"), refs, strict=True):
            parts[name].append(ref)
    split_labels = {"train": labels[plan.train], "val": labels[plan.val]}
    if plan.test is not None:
        split_labels["test"] = labels[plan.test]
    else:
        split_labels["test"] = np.concatenate([m["labels"] for m in test_meta])
        parts["test"] = test_tables
    return SplitDatasets(
        train=ray.data.from_arrow_refs(parts["train"]),
        val=ray.data.from_arrow_refs(parts["val"]),
        test=ray.data.from_arrow_refs(parts["test"]),
        provenance=provenance,
        labels=split_labels,
    )


def train_stats(train: Any) -> dict[str, Any]:
    """Exact value counts of every column of the training split, counted per block in Ray
    tasks and merged on the driver (`column_stats`, `merge_stats`): what the preprocessor and
    the monitoring reference are fitted on."""

    def stats(batch: pd.DataFrame) -> dict[str, list[str]]:
        return {"stats": [json.dumps(column_stats(batch))]}

    blocks = train.map_batches(stats, batch_format="pandas", batch_size=None).take_all()
    merged = None
    for row in blocks:
        block = json.loads(row["stats"])
        # JSON keys are strings: numeric values back to floats before merging.
        block["numeric"] = {c: {float(k): n for k, n in v.items()}
                            for c, v in block["numeric"].items()}  # fmt: skip
        merged = block if merged is None else merge_stats(merged, block)
    if merged is None:
        raise DataError("the training split is empty")
    return merged
