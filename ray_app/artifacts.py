"""A model bundle on disk (weights + config + preprocessor JSON) and the scorer built from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ray_app.config import ModelConfig
from ray_app.data import NUMERIC_COLUMNS
from ray_app.errors import UserError
from ray_app.features import Preprocessor
from ray_app.model import TabularMLP

WEIGHTS = "model.pt"
MODEL_META = "model.json"
PREPROCESSOR = "preprocessor.json"


def build_model(cfg: ModelConfig, cardinalities: list[int]) -> TabularMLP:
    """The one place a TabularMLP is constructed from config + vocabulary sizes."""
    return TabularMLP(cfg, cardinalities, n_numeric=len(NUMERIC_COLUMNS))


def save_bundle(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    model_cfg: ModelConfig,
    cardinalities: list[int],
    preprocessor: Preprocessor | None = None,
) -> Path:
    """Write weights (state dict only: loadable with weights_only=True) and JSON metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, directory / WEIGHTS)
    meta = {"model_config": model_cfg.model_dump(), "cardinalities": cardinalities}
    (directory / MODEL_META).write_text(json.dumps(meta, indent=1))
    if preprocessor is not None:
        preprocessor.save(directory / PREPROCESSOR)
    return directory


def load_model(directory: Path) -> TabularMLP:
    """Rebuild the model from a bundle directory; never unpickles arbitrary objects."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / MODEL_META).read_text())
        state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{directory}: not a ray_app model bundle ({exc})") from None
    model = build_model(ModelConfig(**meta["model_config"]), list(meta["cardinalities"]))
    model.load_state_dict(state)
    model.eval()
    return model


@dataclass
class Scorer:
    """Raw rows in, probability of >50K out: preprocessing and model together."""

    preprocessor: Preprocessor
    model: TabularMLP

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

    @torch.inference_mode()
    def predict_encoded(self, x_cat: np.ndarray, x_num: np.ndarray) -> np.ndarray:
        # In chunks of 32k rows: a single pass holds every row's embeddings at once.
        cat, num = torch.from_numpy(x_cat), torch.from_numpy(x_num)
        chunks = [self.model(cat[i : i + 32_768], num[i : i + 32_768])
                  for i in range(0, len(cat), 32_768)]  # fmt: skip
        logits = torch.cat(chunks) if chunks else torch.empty(0)
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(income > 50K) for each row of a frame holding the 14 feature columns."""
        return self.predict_encoded(*self.preprocessor.transform(frame))
