"""Ray Data: from files (a path, folder, glob or URI; CSV, Parquet or raw UCI) to the Datasets
Ray Train workers and Tune trials read, without the driver ever holding the rows.

    files --(one Ray task per file: read + resolve columns + validate, vectorised)--> blocks
          --(the split plan, computed on the driver from the labels alone)--> train/val/test
          --(preprocessor fitted from merged per-block value counts)--> encoded Datasets,
            materialized in the object store once, before any Train worker starts

The same functions as the in-process path (`ray_app.data.files.load_splits`): `read_file`,
`plan_splits`, `check_overlap`, `Preprocessor.fit_stats`. So the shipped data gives the same
rows in each split and the same preprocessor, whichever path read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.config import DataConfig, FeatureConfig
from ray_app.core.errors import DataError
from ray_app.data.files import (
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    check_overlap,
    describe_layout,
    feature_hashes,
    list_files,
    plan_splits,
    read_file,
    read_for_scoring,
    record_test_source,
    resolve_sources,
)
from ray_app.ml.features import Preprocessor, column_stats, merge_stats

# Encoded columns of the model-ready Datasets: x_cat int64 [8], x_num float32 [6], y float32.
ENCODED = ("x_cat", "x_num", "y")
# Batch scoring's block size: enough blocks for every actor, few enough to keep overhead low.
BLOCK_ROWS = 100_000


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
            meta["overlap"] = np.isin(test_hashes, feature_hashes(frame))
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
        overlap = np.logical_or.reduce([m["overlap"] for m in meta])
        n_test = sum(m["rows"] for m in test_meta)
        provenance["test_overlap"] = check_overlap(int(overlap.sum()), n_test, sources, cfg)
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


def fit_preprocessor(train: Any, cfg: FeatureConfig) -> Preprocessor:
    """Vocabularies and quantiles from per-block value counts merged on the driver."""
    return Preprocessor.fit_stats(train_stats(train), cfg)


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


def encode(dataset: Any, pre: Preprocessor) -> Any:
    """Raw rows -> x_cat, x_num, y (the preprocessor of the training split), lazily."""

    def transform(batch: pd.DataFrame) -> dict[str, np.ndarray]:
        x_cat, x_num = pre.transform(batch)
        return {"x_cat": x_cat, "x_num": x_num, "y": batch[LABEL_COLUMN].to_numpy(np.float32)}

    return dataset.map_batches(transform, batch_format="pandas")


def model_ready(splits: SplitDatasets, pre: Preprocessor) -> dict[str, Any]:
    """Encoded train and val Datasets, materialized: blocks in the object store, computed
    once, before Ray Train reserves its workers' CPUs (on 2 CPUs a streaming read inside
    fit() can starve)."""
    return {
        "train": encode(splits.train, pre).materialize(),
        "val": encode(splits.val, pre).materialize(),
    }


def summarise_datasets(splits: SplitDatasets) -> dict[str, Any]:
    """Row counts and positive rates per split, and where the rows came from."""
    out: dict[str, Any] = {"rows": splits.sizes()}
    out["positive_rate"] = {k: float(np.mean(v)) for k, v in splits.labels.items()}
    out.update(splits.provenance)
    return out


class BundleScorer:
    """Ray Data actor: loads a model bundle once, scores raw-row batches (batch scoring)."""

    def __init__(self, bundle_dir: str, model_version: str, members: bool = False) -> None:
        import torch

        from ray_app.ml.bundle import Scorer

        torch.set_num_threads(1)
        self.scorer = Scorer.from_bundle(bundle_dir)  # type: ignore[arg-type]
        self.version, self.members = model_version, members

    def __call__(self, batch: Any) -> Any:
        """An Arrow batch in, the same batch with probability, label and model_version out
        (Arrow, not pandas: Ray Data's Arrow-backed pandas columns cost more than the model);
        `members`: an ensemble's members' own probabilities too (probability_member_<i>)."""
        import pyarrow as pa

        from ray_app.ml.bundle import average

        columns = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in FEATURE_COLUMNS}
        members = self.scorer.predict_members(*self.scorer.preprocessor.transform(columns))
        prob = average(members)
        labels = np.where(prob >= 0.5, ">50K", "<=50K")
        batch = (
            batch.append_column("probability", pa.array(prob))
            .append_column("label", pa.array(labels))
            .append_column("model_version", pa.array([self.version] * len(prob)))
        )
        for i, member in enumerate(members if self.members and len(members) > 1 else []):
            batch = batch.append_column(f"probability_member_{i}", pa.array(member))
        return batch


def score_dataset(
    dataset: Any, bundle_dir: str, version: str, actors: int = 1, members: bool = False
) -> Any:
    """`dataset` with probability, predicted label and model version columns (and, with
    `members`, each ensemble member's probability)."""
    return dataset.map_batches(
        BundleScorer,
        fn_constructor_args=(bundle_dir, version, members),
        batch_format="pyarrow",
        batch_size=16_384,
        concurrency=actors,
        num_cpus=1,
    )


def predict_files(
    source: str, out: str, bundle_dir: str, version: str, fmt: str = "parquet", actors: int = 1
) -> dict[str, Any]:
    """Batch scoring: every file of `source` read and checked in its own task, scored by
    `actors` actors that load the bundle once, written to the folder `out` (Parquet or CSV:
    the rows' own columns, source_file, source_row, probability, label, model_version).
    Invalid rows go to `<out>.bad_rows.csv` with file, line or row, column and reason."""
    import time

    import ray

    @ray.remote(num_returns=2)
    def read(path: str) -> tuple[Any, dict[str, Any]]:
        import pyarrow as pa

        frame, errors = read_for_scoring(path)
        return pa.Table.from_pandas(frame, preserve_index=False), {"rows": len(frame),
                                                                    "errors": errors}  # fmt: skip

    start = time.perf_counter()
    pairs: list[Any] = [read.remote(path) for path in list_files(source)]
    # File-level problems (no header, a missing column) stop here, before anything is written.
    infos: list[dict[str, Any]] = get([info for _, info in pairs])
    rows = sum(info["rows"] for info in infos)

    @ray.remote
    def chunk(table: Any, start: int, length: int) -> Any:
        return table.slice(start, length)

    # Blocks of at most 100k rows (not one per file), so every actor has work. Cut here, by
    # tasks that run before the scoring actors hold the CPUs: Dataset.repartition() upstream
    # of them waited for a CPU forever on this 2-CPU machine.
    blocks = [
        chunk.remote(table, start, BLOCK_ROWS)
        for (table, _), info in zip(pairs, infos, strict=True)
        for start in range(0, info["rows"], BLOCK_ROWS)
    ]
    ray.wait(blocks, num_returns=len(blocks))
    scored = score_dataset(ray.data.from_arrow_refs(blocks), bundle_dir, version, actors)  # type: ignore[arg-type]
    if fmt == "csv":
        scored.write_csv(out)
    else:
        scored.write_parquet(out)
    errors = [e for info in infos for e in info["errors"]]
    wall = time.perf_counter() - start
    bad_file = None
    if errors:
        bad_file = f"{out.rstrip('/')}.bad_rows.csv"
        pd.DataFrame({"error": errors}).to_csv(bad_file, index=False)
    return {
        "rows_scored": rows,
        "bad_rows": len(errors),
        "bad_rows_file": bad_file,
        "out": out,
        "format": fmt,
        "model_version": version,
        "wall_s": round(wall, 3),
        "rows_per_s": round(rows / wall, 1) if wall else None,
    }
