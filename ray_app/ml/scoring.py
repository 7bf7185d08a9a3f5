"""The one way a bundle scores rows: raw rows -> preprocessor -> model -> P(>50K), a deep
ensemble's members in one stacked pass and averaged by `average`. Used by Serve's Model, batch
scoring, the pyfunc, the training job's evaluation, Katib trials and the monitor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ray_app.core.config import ModelConfig
from ray_app.core.schema import FEATURE_COLUMNS, LABEL_COLUMN, label_names
from ray_app.ml.bundle import PREPROCESSOR, build_model, load_model
from ray_app.ml.features import Preprocessor
from ray_app.ml.model import StackedMLP, TabularMLP

# Rows per forward pass: one pass over a large split would hold every row's embeddings.
CHUNK_ROWS = 32_768


def average(members: np.ndarray) -> np.ndarray:
    """(K, N) members' probabilities -> (N,): the ensemble's. The one ensemble average."""
    return members.mean(axis=0)


def spread(members: np.ndarray) -> np.ndarray:
    """(K, N) members' probabilities -> (N,): how much the members disagree on each row, the
    standard deviation of their probabilities (population form: 0 for a single model). The
    one spread: served with every answer, and the label-free uncertainty signal."""
    return members.std(axis=0)


@dataclass
class Scorer:
    """Raw rows in, probability of >50K out: preprocessing and model together."""

    preprocessor: Preprocessor
    model: TabularMLP | StackedMLP

    @classmethod
    def from_state(
        cls, pre: Preprocessor, model_cfg: ModelConfig, state: dict[str, torch.Tensor]
    ) -> Scorer:
        """From weights in memory (a loop's best state), without a round trip through disk."""
        model = build_model(model_cfg, pre.cardinalities)
        model.load_state_dict(state)
        return cls(pre, model.eval())

    @classmethod
    def from_bundle(cls, directory: Path) -> Scorer:
        return cls(Preprocessor.load(Path(directory) / PREPROCESSOR), load_model(directory))

    @property
    def members(self) -> int:
        """1 for one model; K for a deep ensemble."""
        return self.model.members if isinstance(self.model, StackedMLP) else 1

    @torch.inference_mode()
    def predict_members(self, x_cat: np.ndarray, x_num: np.ndarray) -> np.ndarray:
        """Each member's P(>50K) of encoded rows: (K, N); one model is K = 1."""
        cat, num = torch.from_numpy(x_cat), torch.from_numpy(x_num)
        chunks = [self.model(cat[i : i + CHUNK_ROWS], num[i : i + CHUNK_ROWS])
                  .reshape(self.members, -1) for i in range(0, len(cat), CHUNK_ROWS)]  # fmt: skip
        logits = torch.cat(chunks, dim=1) if chunks else torch.empty(self.members, 0)
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def score_encoded(self, x_cat: np.ndarray, x_num: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(>50K) of encoded rows and the members' spread on each (0 for one model)."""
        members = self.predict_members(x_cat, x_num)
        return average(members), spread(members)

    def predict_encoded(self, x_cat: np.ndarray, x_num: np.ndarray) -> np.ndarray:
        """P(>50K) of encoded rows; an ensemble averages its members' probabilities."""
        return average(self.predict_members(x_cat, x_num))

    def predict_proba(self, rows: pd.DataFrame | dict[str, Any]) -> np.ndarray:
        """P(income > 50K) for each raw row (a frame or columns holding the 14 features)."""
        return self.predict_encoded(*self.preprocessor.transform(rows))


def bundle_files(directory: str | Path) -> dict[str, bytes]:
    """A bundle's files (weights, model.json, preprocessor.json, ...) as bytes: what scoring
    actors on other nodes get, through the object store, instead of a path on this one."""
    root = Path(directory)
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file()}  # fmt: skip


class BatchScorer:
    """Ray Data actor: loads a bundle once, scores Arrow batches of raw rows (batch scoring, the
    training job's evaluation).

    `bundle`: the bundle's files (`bundle_files`). Not a folder path: the driver's folders are
    on the driver's machine, and on a cluster these actors run on others (a 0-CPU head puts
    every one of them there): a path failed with "No such file" there."""

    def __init__(self, bundle: Any, model_version: str, members: bool = False) -> None:
        import tempfile

        import ray

        torch.set_num_threads(1)
        if isinstance(bundle, ray.ObjectRef):  # Ray Data passes constructor args as they are
            bundle = ray.get(bundle)
        with tempfile.TemporaryDirectory(prefix="ray_app_bundle_") as tmp:
            for name, data in bundle.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self.scorer = Scorer.from_bundle(Path(tmp))  # read whole: the folder can go
        self.version, self.members = model_version, members

    def __call__(self, batch: Any) -> Any:
        """An Arrow batch in, the same batch with probability, label and model_version out
        (Arrow, not pandas: Ray Data's Arrow-backed pandas columns cost more than the model);
        `members`: an ensemble's members' own probabilities too (probability_member_<i>)."""
        import pyarrow as pa

        columns = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in FEATURE_COLUMNS}
        members = self.scorer.predict_members(*self.scorer.preprocessor.transform(columns))
        prob = average(members)
        labels = label_names(prob)
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
    `members`, each ensemble member's probability). The bundle's files travel to the actors
    through the object store (put once, whatever the number of actors)."""
    import ray

    files = ray.put(bundle_files(bundle_dir))
    return dataset.map_batches(
        BatchScorer,
        fn_constructor_args=(files, version, members),
        batch_format="pyarrow",
        batch_size=16_384,
        concurrency=actors,
        num_cpus=1,
    )


def encode(dataset: Any, pre: Preprocessor) -> Any:
    """Raw rows -> x_cat, x_num, y (the preprocessor of the training split), lazily."""

    def transform(batch: pd.DataFrame) -> dict[str, np.ndarray]:
        x_cat, x_num = pre.transform(batch)
        return {"x_cat": x_cat, "x_num": x_num, "y": batch[LABEL_COLUMN].to_numpy(np.float32)}

    return dataset.map_batches(transform, batch_format="pandas")


def model_ready(splits: Any, pre: Preprocessor) -> dict[str, Any]:
    """Encoded train and val Datasets, materialized: blocks in the object store, computed
    once, before Ray Train reserves its workers' CPUs (on 2 CPUs a streaming read inside
    fit() can starve)."""
    return {
        "train": encode(splits.train, pre).materialize(),
        "val": encode(splits.val, pre).materialize(),
    }
