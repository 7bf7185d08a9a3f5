"""A model bundle on disk: weights (state dicts only), model.json (architecture, vocabulary
sizes, ensemble members) and the preprocessor JSON; nothing in it is unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ray_app.core.config import ModelConfig
from ray_app.core.errors import UserError
from ray_app.core.schema import NUMERIC_COLUMNS
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
