"""A model bundle on disk (weights + config + preprocessor JSON) and the scorer built from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ray_app.core.config import ModelConfig
from ray_app.core.errors import UserError
from ray_app.data.files import NUMERIC_COLUMNS
from ray_app.ml.features import Preprocessor
from ray_app.ml.model import StackedMLP, TabularMLP

WEIGHTS = "model.pt"
MODEL_META = "model.json"
PREPROCESSOR = "preprocessor.json"


def build_model(cfg: ModelConfig, cardinalities: list[int]) -> TabularMLP:
    """The one place a TabularMLP is constructed from config + vocabulary sizes."""
    return TabularMLP(cfg, cardinalities, n_numeric=len(NUMERIC_COLUMNS))


def member_weights(index: int) -> str:
    """Weights file of ensemble member `index` in a bundle."""
    return f"member-{index}.pt"


def save_bundle(
    directory: Path,
    state_dict: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
    model_cfg: ModelConfig,
    cardinalities: list[int],
    preprocessor: Preprocessor | None = None,
    members: list[dict[str, Any]] | None = None,
) -> Path:
    """Write weights (state dicts only: loadable with weights_only=True) and JSON metadata.

    A list of state dicts is a deep ensemble: one weights file per member (`members`: what
    model.json records of each, e.g. its seed and best epoch), the preprocessor once."""
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"model_config": model_cfg.model_dump(), "cardinalities": cardinalities}
    if isinstance(state_dict, list):
        described = members or [{} for _ in state_dict]
        meta["ensemble"] = []
        for i, (state, about) in enumerate(zip(state_dict, described, strict=True)):
            torch.save(state, directory / member_weights(i))
            meta["ensemble"].append({"weights": member_weights(i), **about})
    else:
        torch.save(state_dict, directory / WEIGHTS)
    (directory / MODEL_META).write_text(json.dumps(meta, indent=1))
    if preprocessor is not None:
        preprocessor.save(directory / PREPROCESSOR)
    return directory


def load_model(directory: Path) -> TabularMLP | StackedMLP:
    """Rebuild the model from a bundle directory (an ensemble: its members stacked); never
    unpickles arbitrary objects."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / MODEL_META).read_text())
        files = [m["weights"] for m in meta.get("ensemble", [])] or [WEIGHTS]
        states = [torch.load(directory / f, map_location="cpu", weights_only=True) for f in files]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise UserError(f"{directory}: not a ray_app model bundle ({exc})") from None
    models = []
    for state in states:
        model = build_model(ModelConfig(**meta["model_config"]), list(meta["cardinalities"]))
        model.load_state_dict(state)
        models.append(model.eval())
    return StackedMLP(models).eval() if "ensemble" in meta else models[0]


def ensemble_size(directory: Path) -> int:
    """How many members a bundle's model averages (1: a single model), from model.json."""
    meta = json.loads((Path(directory) / MODEL_META).read_text())
    return len(meta.get("ensemble", [])) or 1


def average(members: np.ndarray) -> np.ndarray:
    """(K, N) members' probabilities -> (N,): the ensemble's (the same as mean_probability)."""
    return members.mean(axis=0)


def mean_probability(model: TabularMLP | StackedMLP, x_cat: torch.Tensor,
                     x_num: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """P(>50K) per row (B,); a stacked ensemble's (K, B) members' probabilities averaged."""
    prob = torch.sigmoid(model(x_cat, x_num))
    return prob.mean(dim=0) if prob.dim() == 2 else prob


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
        # In chunks of 32k rows: a single pass holds every row's embeddings at once.
        cat, num = torch.from_numpy(x_cat), torch.from_numpy(x_num)
        chunks = [self.model(cat[i : i + 32_768], num[i : i + 32_768]).reshape(self.members, -1)
                  for i in range(0, len(cat), 32_768)]  # fmt: skip
        logits = torch.cat(chunks, dim=1) if chunks else torch.empty(self.members, 0)
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def predict_encoded(self, x_cat: np.ndarray, x_num: np.ndarray) -> np.ndarray:
        """P(>50K) of encoded rows; an ensemble averages its members' probabilities."""
        return average(self.predict_members(x_cat, x_num))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(income > 50K) for each row of a frame holding the 14 feature columns."""
        return self.predict_encoded(*self.preprocessor.transform(frame))
