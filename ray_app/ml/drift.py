"""Drift primitives: the training reference saved in the model bundle, and PSI against it.

The reference (`reference.json`, beside the preprocessor; JSON, no pickle) holds, per
feature, the training split's distribution over fixed bins: a categorical feature over the
preprocessor's own codes (0 = out-of-vocabulary, then the vocabulary), a numeric feature over
its training deciles (`numeric_edges`); plus the model's score distribution on the validation
split (ten equal bins of P(>50K)) and the model's own test figures. The same `bin_codes`
serve the offline monitor (`ray-app monitor`) and the serving graph's sliding window
(`adult_feature_psi`).

PSI = sum over bins of (a - e) * ln(a / e), fractions floored at 1e-4 so an empty bin on
either side stays finite. Rule of thumb (and the default threshold): < 0.1 stable, 0.1-0.2
moderate, > 0.2 shifted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ray_app.core.errors import UserError
from ray_app.core.schema import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS
from ray_app.data.stats import quantiles, sorted_counts
from ray_app.ml.features import Preprocessor

REFERENCE = "reference.json"
FORMAT = "ray_app.reference"
VERSION = 1
N_BINS = 10
_FLOOR = 1e-4
FEATURES = CATEGORICAL_COLUMNS + NUMERIC_COLUMNS  # the column order of `bin_codes`
SCORE_EDGES = np.linspace(0.0, 1.0, N_BINS + 1)[1:-1]


def build_reference(
    stats: dict[str, Any],
    pre: Preprocessor,
    val_probability: np.ndarray,
    figures: Mapping[str, float],
    val_spread: np.ndarray | None = None,
) -> dict[str, Any]:
    """The reference of one model, from the training split's value counts (`column_stats`
    merged, exact; the same counts the preprocessor was fitted on) and its validation scores."""
    total = float(stats["rows"])
    features: dict[str, Any] = {}
    for column in CATEGORICAL_COLUMNS:
        counts = stats["categorical"][column]
        known = [counts.get(v, 0) / total for v in pre.vocab[column]]
        features[column] = {"kind": "categorical", "bins": ["<other>", *pre.vocab[column]],
                            "fractions": [max(0.0, 1.0 - sum(known)), *known]}  # fmt: skip
    for column in NUMERIC_COLUMNS:
        values, counts = sorted_counts(stats["numeric"][column])
        edges = numeric_edges(values, counts)
        index = np.searchsorted(np.asarray(edges), values, side="right")
        fractions = np.bincount(index, weights=counts, minlength=len(edges) + 1) / total
        features[column] = {"kind": "numeric", "edges": edges, "fractions": fractions.tolist()}
    score = np.bincount(np.searchsorted(SCORE_EDGES, val_probability, side="right"),
                        minlength=N_BINS) / max(len(val_probability), 1)  # fmt: skip
    return {
        "format": FORMAT,
        "version": VERSION,
        "rows": int(total),
        "features": features,
        "score": {
            "edges": SCORE_EDGES.tolist(),
            "fractions": score.tolist(),
            "rows": len(val_probability),
        },
        "model_figures": {k: float(v) for k, v in figures.items()},
        # A deep ensemble's members' mean spread on the validation rows: what the label-free
        # uncertainty signal compares live traffic with (absent for one model).
        **(
            {"spread": {"mean": float(val_spread.mean()), "rows": len(val_spread)}}
            if val_spread is not None and len(val_spread)
            else {}
        ),
    }


def numeric_edges(values: np.ndarray, counts: np.ndarray) -> list[float]:
    """Bin edges of a numeric feature (a row goes to bin i when edges[i-1] <= x < edges[i]):
    its training deciles; a value holding more than a decile (capital_gain's 0, ~92 % of rows)
    gets a bin of its own, and a tail above the top edge holding 5 % or more of the rows is cut
    at its quartiles (else all of capital_gain's non-zero values would share one bin, and a
    shift among them would not show)."""
    deciles = quantiles(values, counts, np.linspace(0.0, 1.0, N_BINS + 1)[1:-1])
    edges = set(deciles)
    for tied in {q for q in deciles if deciles.count(q) > 1}:
        above = values[values > tied]
        if len(above):
            edges.add(float(above[0]))
    tail = values > max(edges)
    if counts[tail].sum() >= 0.05 * counts.sum():
        edges.update(quantiles(values[tail], counts[tail], np.array([0.25, 0.5, 0.75])))
    return sorted(edges)


def save_reference(reference: dict[str, Any], directory: Path) -> Path:
    path = Path(directory) / REFERENCE
    path.write_text(json.dumps(reference, indent=1))
    return path


def load_reference(directory: Path) -> dict[str, Any] | None:
    """The bundle's reference; None for a bundle saved before monitoring existed."""
    path = Path(directory) / REFERENCE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the monitoring reference: {exc}") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise UserError(f"{path}: not a {FORMAT} v{VERSION} document")
    return dict(doc)


def bin_codes(
    reference: dict[str, Any], x_cat: np.ndarray, columns: Mapping[str, Sequence[Any]]
) -> np.ndarray:
    """Bin of every row for every feature, int16 [N, 14] in FEATURES order: the categorical
    codes the preprocessor already computed (`x_cat`), the numeric columns' raw values binned
    on the training deciles."""
    n = len(x_cat)
    out = np.empty((n, len(FEATURES)), dtype=np.int16)
    out[:, : len(CATEGORICAL_COLUMNS)] = x_cat
    for j, column in enumerate(NUMERIC_COLUMNS, start=len(CATEGORICAL_COLUMNS)):
        edges = np.asarray(reference["features"][column]["edges"])
        values = np.asarray(columns[column], dtype=np.float64)
        out[:, j] = np.searchsorted(edges, values, side="right")
    return out


def psi(expected: Sequence[float], counts: np.ndarray) -> float:
    """Population stability index of observed `counts` against `expected` fractions."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), _FLOOR)
    a = np.maximum(counts / max(counts.sum(), 1), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(reference: dict[str, Any], codes: np.ndarray) -> dict[str, float]:
    """PSI per feature of the rows whose bins are `codes` ([N, 14], from `bin_codes`)."""
    out = {}
    for j, column in enumerate(FEATURES):
        expected = reference["features"][column]["fractions"]
        counts = np.bincount(codes[:, j].astype(np.int64), minlength=len(expected))
        out[column] = psi(expected, counts[: len(expected)])
    return out


def score_counts(probability: np.ndarray) -> np.ndarray:
    """Scores per bin of the reference's ten equal bins of P(>50K)."""
    return np.bincount(np.searchsorted(SCORE_EDGES, probability, side="right"), minlength=N_BINS)


def score_psi(reference: dict[str, Any], probability: np.ndarray) -> float:
    return psi(reference["score"]["fractions"], score_counts(probability))


def drift_report(
    reference: dict[str, Any],
    codes: np.ndarray,
    probability: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """Per-feature and score PSI, the features past `threshold`, and whether anything drifted."""
    features = feature_psi(reference, codes)
    score = score_psi(reference, probability)
    drifted = sorted((c for c, v in features.items() if v > threshold),
                     key=lambda c: -features[c])  # fmt: skip
    return {
        "rows": len(codes),
        "threshold": threshold,
        "feature_psi": {c: round(v, 4) for c, v in features.items()},
        "score_psi": round(score, 4),
        "drifted_features": drifted,
        "drift": bool(drifted) or score > threshold,
    }


class DriftWindow:
    """The last `size` rows' bin codes (a ring buffer), for the serving graph's PSI gauges."""

    def __init__(self, reference: dict[str, Any], size: int) -> None:
        self.reference, self.size = reference, size
        self.codes = np.zeros((size, len(FEATURES)), dtype=np.int16)
        self.filled, self.next = 0, 0

    def add(self, codes: np.ndarray) -> None:
        codes = codes[-self.size :]
        end = self.next + len(codes)
        if end <= self.size:
            self.codes[self.next : end] = codes
        else:
            split = self.size - self.next
            self.codes[self.next :] = codes[:split]
            self.codes[: end - self.size] = codes[split:]
        self.next = end % self.size
        self.filled = min(self.size, self.filled + len(codes))

    def psi(self) -> dict[str, float]:
        return feature_psi(self.reference, self.codes[: self.filled])
