"""Train / validation / test splits of the rows, and the leak guard: test rows that repeat
training rows are counted, and above `max_test_overlap` the run stops."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ray_app.core.config import DataConfig
from ray_app.core.errors import DataError
from ray_app.core.schema import FEATURE_COLUMNS, LABEL_COLUMN, LABELS
from ray_app.data.files import read_table_with_layout, verify_checksum
from ray_app.data.layouts import Layout


@dataclass(frozen=True)
class Splits:
    """Train / validation / test frames and where they came from (`provenance`)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def label_arrays(self) -> dict[str, np.ndarray]:
        return {name: frame[LABEL_COLUMN].to_numpy() for name, frame in
                (("train", self.train), ("val", self.val), ("test", self.test))}  # fmt: skip


def feature_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of the 14 parsed features (missing values hash alike)."""
    return pd.util.hash_pandas_object(frame[FEATURE_COLUMNS], index=False).to_numpy()


def overlap_mask(test_hashes: np.ndarray, train_part: pd.DataFrame) -> np.ndarray:
    """Which test rows (by `feature_hashes`) occur in this part of the training data (one
    file of a folder, or all of it)."""
    return np.isin(test_hashes, feature_hashes(train_part))


def combine_overlap(masks: list[np.ndarray]) -> int:
    """Test rows that occur in ANY of the training files: the per-file masks OR-ed (a row
    counts once, however many files repeat it)."""
    if not masks:
        raise DataError("no training files: nothing to compare the test rows with")
    return int(np.logical_or.reduce(masks).sum())


def count_overlap(train: pd.DataFrame, test: pd.DataFrame) -> int:
    """Test rows whose 14 features also occur in the training data."""
    return combine_overlap([overlap_mask(feature_hashes(test), train)])


def _same_file(a: str, b: Path) -> bool:
    return "://" not in a and Path(a).exists() and b.exists() and Path(a).resolve() == b.resolve()


@dataclass(frozen=True)
class SplitPlan:
    """Which rows of the training file (and of a test file) go to which split.

    Computed from the labels alone, so a Ray run can apply it to blocks it never gathers:
    index arrays into the training file's rows, in the order the split takes them.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None  # None: the test rows come from a test file, all of them


def plan_splits(labels: np.ndarray, cfg: DataConfig, test_from_file: bool) -> SplitPlan:
    """Stratified, seeded test (one file only) / subsample / validation splits."""
    # Imported here, in the driver that plans the split: a Ray Train worker imports this
    # module (its rows' types) and would pay ~1 s of CPU for scikit-learn at every start.
    from sklearn.model_selection import train_test_split

    rest = np.arange(len(labels), dtype=np.int32 if len(labels) < 2**31 else np.int64)
    test = None
    if not test_from_file:
        rest, test = train_test_split(
            rest, test_size=cfg.test_fraction, stratify=labels, random_state=cfg.seed
        )
    if cfg.subsample is not None and cfg.subsample < len(rest):
        rest, _ = train_test_split(
            rest, train_size=cfg.subsample, stratify=labels[rest], random_state=cfg.seed
        )
    train, val = train_test_split(
        rest, test_size=cfg.val_fraction, stratify=labels[rest], random_state=cfg.seed
    )
    return SplitPlan(train, val, test)


@dataclass(frozen=True)
class Sources:
    """The files a config names, and what the overlap guard and the split need to know."""

    train: str
    test: str | None
    provenance: dict[str, Any]


def resolve_sources(cfg: DataConfig) -> Sources:
    """Which training and test files; checksums of the shipped ones."""
    shipped_train = cfg.data_dir / "adult.data"
    shipped_test = cfg.data_dir / "adult.test"
    train = str(cfg.train_path) if cfg.train_path else str(shipped_train)
    shipped = cfg.train_path is None or _same_file(str(cfg.train_path), shipped_train)
    test = str(cfg.test_path) if cfg.test_path else (str(shipped_test) if shipped else None)
    if cfg.verify_checksums:
        for path in {train, test or ""} & {str(shipped_train), str(shipped_test)}:
            verify_checksum(Path(path))
    provenance: dict[str, Any] = {"train_file": train, "notes": []}
    return Sources(train, test, provenance)


def record_test_source(labels: np.ndarray, sources: Sources, cfg: DataConfig) -> None:
    """Both labels must occur in the training data; provenance says where the test rows
    come from (a split of the training file, or the test file)."""
    if len(np.unique(labels)) < 2:
        raise DataError(
            f"{sources.train}: both labels {list(LABELS)} must occur in the training data"
        )
    if sources.test is None:
        sources.provenance["test_source"] = (
            f"split of {sources.train} (test_fraction {cfg.test_fraction}, seed {cfg.seed})"
        )
    else:
        sources.provenance.update(test_file=sources.test, test_source=sources.test)


def check_overlap(overlap: int, n_test: int, sources: Sources, cfg: DataConfig) -> dict:
    """The overlap guard: record the count, refuse above `max_test_overlap`."""
    rate = overlap / max(n_test, 1)
    if rate > cfg.max_test_overlap:
        raise DataError(
            f"{sources.test}: {overlap} of {n_test} test rows ({rate:.2%}) repeat rows of the "
            f"training file {sources.train} (same 14 features); above the "
            f"{cfg.max_test_overlap:.1%} limit (--max-test-overlap), the test figures would "
            "be computed on training rows"
        )
    return {"rows": overlap, "of": n_test, "rate": round(rate, 6)}


def describe_layout(provenance: dict[str, Any], key: str, layout: Layout, path: str) -> None:
    provenance[f"{key}_layout"] = layout.describe()
    if layout.ignored:
        provenance["notes"].append(
            f"{path}: ignored column(s) {list(layout.ignored)} (not Adult features)"
        )


def load_splits(cfg: DataConfig) -> Splits:
    """Train / validation / test in this process, and their provenance.

    - the shipped adult.data (default): its stratified, seeded validation split and the
      official adult.test;
    - one file of yours (`train_path`, no `test_path`): stratified, seeded train / validation
      / test splits of it (`test_fraction`, `val_fraction`);
    - two files: yours. Whenever the test rows come from a file, those whose 14 features also
      occur in the training file are counted; above `max_test_overlap` the run stops.

    `ray_app.data.raydata.load_datasets` does the same with Ray Data, from the same functions.
    """
    sources = resolve_sources(cfg)
    provenance = sources.provenance
    full, train_layout = read_table_with_layout(sources.train)
    describe_layout(provenance, "train", train_layout, sources.train)
    labels = full[LABEL_COLUMN].to_numpy()
    record_test_source(labels, sources, cfg)
    if sources.test is not None:
        test, test_layout = read_table_with_layout(sources.test)
        describe_layout(provenance, "test", test_layout, sources.test)
        provenance["test_overlap"] = check_overlap(
            count_overlap(full, test), len(test), sources, cfg
        )
    plan = plan_splits(labels, cfg, test_from_file=sources.test is not None)
    if plan.test is not None:
        test = full.iloc[plan.test]
    return Splits(
        train=full.iloc[plan.train].reset_index(drop=True),
        val=full.iloc[plan.val].reset_index(drop=True),
        test=test.reset_index(drop=True),
        provenance=provenance,
    )


class HasSplits(Protocol):
    """Splits in this process or as Ray Datasets: what a summary needs of either."""

    @property
    def provenance(self) -> dict[str, Any]: ...

    def sizes(self) -> dict[str, int]: ...

    def label_arrays(self) -> dict[str, np.ndarray]: ...


def summarise(splits: HasSplits) -> dict[str, Any]:
    """Row counts and positive rates per split, and where the rows came from (`ray-app data`,
    the preprocess step, the data/summary.json of every training run)."""
    out: dict[str, Any] = {"rows": splits.sizes()}
    out["positive_rate"] = {k: float(np.mean(v)) for k, v in splits.label_arrays().items()}
    out.update(splits.provenance)
    return out
