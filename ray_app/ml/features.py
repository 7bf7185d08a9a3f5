"""Preprocessing fitted on the training split; saved as versioned JSON; used by train and serve."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from ray_app.core.config import FeatureConfig
from ray_app.core.errors import UserError
from ray_app.core.schema import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS
from ray_app.data.stats import MISSING_TOKEN, column_stats, quantiles, sorted_counts

FORMAT = "ray_app.preprocessor"
VERSION = 1
OOV_INDEX = 0  # index 0 of every categorical vocabulary: unseen (or too rare) category
_EPS = 1e-7
Columns: TypeAlias = "pd.DataFrame | Mapping[str, Sequence[Any]]"


def _normal_references(n: int) -> np.ndarray:
    """Standard-normal values of n evenly spaced quantile levels (clipped away from 0 and 1)."""
    levels = np.clip(np.linspace(0.0, 1.0, n), _EPS, 1.0 - _EPS)
    dist = NormalDist()
    return np.array([dist.inv_cdf(float(p)) for p in levels])


@dataclass
class Preprocessor:
    """Categorical vocabularies with an OOV bucket and per-column numeric scaling."""

    numeric_scaling: str
    vocab: dict[str, list[str]]
    numeric: dict[str, dict[str, Any]]
    _lookup: dict[str, dict[str, int]] = field(init=False, repr=False)
    _refs: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._lookup = {
            c: {v: i + 1 for i, v in enumerate(values)} for c, values in self.vocab.items()
        }
        if self.numeric_scaling == "quantile_normal":
            n = len(next(iter(self.numeric.values()))["quantiles"])
            self._refs = _normal_references(n)

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: pd.DataFrame, cfg: FeatureConfig) -> Preprocessor:
        """Learn vocabularies and scaling from the training split only."""
        return cls.fit_stats(column_stats(train), cfg)

    @classmethod
    def fit_stats(cls, stats: dict[str, Any], cfg: FeatureConfig) -> Preprocessor:
        """From merged per-column value counts (`column_stats` of each block, `merge_stats`):
        the same figures as fitting on the whole frame, without holding it in one place."""
        vocab: dict[str, list[str]] = {}
        for column in CATEGORICAL_COLUMNS:
            counts = stats["categorical"][column]
            vocab[column] = sorted(str(v) for v, n in counts.items() if n >= cfg.min_category_count)
        numeric: dict[str, dict[str, Any]] = {}
        for column in NUMERIC_COLUMNS:
            values, counts = sorted_counts(stats["numeric"][column])
            total = counts.sum()
            mean = float((values * counts).sum() / total)
            std = float(np.sqrt((counts * (values - mean) ** 2).sum() / total))
            column_stats_: dict[str, Any] = {
                "median": quantiles(values, counts, np.array([0.5]))[0],
                "mean": mean,
                "std": std or 1.0,
            }
            if cfg.numeric_scaling == "quantile_normal":
                levels = np.linspace(0.0, 1.0, cfg.n_quantiles)
                column_stats_["quantiles"] = quantiles(values, counts, levels)
            numeric[column] = column_stats_
        return cls(numeric_scaling=cfg.numeric_scaling, vocab=vocab, numeric=numeric)

    # ---- transforming --------------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes, OOV slot included, in CATEGORICAL_COLUMNS order."""
        return [len(self.vocab[c]) + 1 for c in CATEGORICAL_COLUMNS]

    def _scale(self, column: str, values: np.ndarray) -> np.ndarray:
        stats = self.numeric[column]
        values = np.where(np.isnan(values), stats["median"], values)
        if self.numeric_scaling == "standard":
            return (values - stats["mean"]) / stats["std"]
        assert self._refs is not None
        q = np.asarray(stats["quantiles"])
        # Interpolate forwards and backwards and average, so tied quantiles (capital_gain is
        # 0 for ~90% of rows) map to the middle of their range rather than an edge.
        up = np.interp(values, q, self._refs)
        down = -np.interp(-values, -q[::-1], -self._refs[::-1])
        return 0.5 * (up + down)

    def transform(self, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        """14 feature columns -> (x_cat int64 [N, 8], x_num float32 [N, 6]).

        `columns` is a DataFrame (training, batch scoring) or a dict of lists (one request's
        records at serving time, without the cost of building a DataFrame).
        """
        missing = [c for c in CATEGORICAL_COLUMNS + NUMERIC_COLUMNS if c not in columns]
        if missing:
            raise UserError(f"input is missing feature column(s): {missing}")
        n = len(columns[NUMERIC_COLUMNS[0]])
        x_cat = np.empty((n, len(CATEGORICAL_COLUMNS)), dtype=np.int64)
        for j, column in enumerate(CATEGORICAL_COLUMNS):
            lookup = self._lookup[column]
            values = columns[column]
            if isinstance(values, pd.Series) and values.dtype != object:
                # Arrow-backed columns (Ray Data batches) hold pd.NA: plain objects, None.
                values = values.astype(object).where(values.notna(), None)
            x_cat[:, j] = [
                lookup.get(MISSING_TOKEN if v is None or v != v else str(v).strip(), OOV_INDEX)
                for v in values
            ]
        x_num = np.empty((n, len(NUMERIC_COLUMNS)), dtype=np.float32)
        for j, column in enumerate(NUMERIC_COLUMNS):
            values = np.asarray(columns[column], dtype=np.float64)
            x_num[:, j] = self._scale(column, values)
        return x_cat, x_num

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "numeric_scaling": self.numeric_scaling,
            "categorical_columns": CATEGORICAL_COLUMNS,
            "numeric_columns": NUMERIC_COLUMNS,
            "vocab": self.vocab,
            "numeric": self.numeric,
        }

    def save(self, path: Path) -> Path:
        """Write JSON atomically (temp file then rename) so a crash leaves no half file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<dict>") -> Preprocessor:
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise UserError(
                f"{source}: not a {FORMAT} v{VERSION} document "
                f"(format={doc.get('format')!r}, version={doc.get('version')!r})"
            )
        if (
            doc.get("categorical_columns") != CATEGORICAL_COLUMNS
            or doc.get("numeric_columns") != NUMERIC_COLUMNS
        ):
            raise UserError(f"{source}: feature columns differ from this version of ray_app")
        return cls(
            numeric_scaling=doc["numeric_scaling"], vocab=doc["vocab"], numeric=doc["numeric"]
        )

    @classmethod
    def load(cls, path: Path) -> Preprocessor:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: cannot read preprocessor JSON: {exc}") from None
        return cls.from_dict(doc, source=str(path))
