"""Exact value counts of the training rows, per column: mergeable across blocks (Ray Data
counts each block in its own task), and the exact sample quantiles computed from them. The
preprocessor and the drift reference are both fitted on these counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ray_app.core.schema import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS

MISSING_TOKEN = "<missing>"  # '?' in the raw data is informative, so it gets its own slot


def column_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Value counts per column of one block of training rows (mergeable: `merge_stats`).

    Exact histograms: Adult's numeric columns take at most ~21k distinct values (fnlwgt), so
    counts stay small however many rows there are; the quantiles computed from them are the
    exact sample quantiles (numpy's linear interpolation).
    """
    categorical = {
        c: {str(k): int(v) for k, v in frame[c].fillna(MISSING_TOKEN).value_counts().items()}
        for c in CATEGORICAL_COLUMNS
    }
    numeric = {}
    for c in NUMERIC_COLUMNS:
        values, counts = np.unique(frame[c].to_numpy(dtype=np.float64), return_counts=True)
        numeric[c] = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return {"rows": len(frame), "categorical": categorical, "numeric": numeric}


def merge_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum two blocks' value counts."""
    out: dict[str, Any] = {"rows": a["rows"] + b["rows"], "categorical": {}, "numeric": {}}
    for kind in ("categorical", "numeric"):
        for column, counts in a[kind].items():
            merged = dict(counts)
            for value, n in b[kind][column].items():
                merged[value] = merged.get(value, 0) + n
            out[kind][column] = merged
    return out


def sorted_counts(counts: Mapping[Any, int]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([float(v) for v in counts], dtype=np.float64)
    order = np.argsort(values)
    return values[order], np.array(list(counts.values()), dtype=np.int64)[order]


def quantiles(values: np.ndarray, counts: np.ndarray, levels: np.ndarray) -> list[float]:
    """np.quantile(..., method='linear') of the multiset `values` x `counts`."""
    ends = np.cumsum(counts)  # position after the last copy of each value
    h = (ends[-1] - 1) * levels
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, ends[-1] - 1)
    a = values[np.searchsorted(ends, lo, side="right")]
    b = values[np.searchsorted(ends, hi, side="right")]
    t = h - lo
    # numpy's _lerp: a + t (b - a), written from the nearer end for t >= 0.5.
    out = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
    return [float(q) for q in out]
