"""A model bundle on disk: weights (state dicts only), model.json (architecture, vocabulary
sizes, ensemble members) and the preprocessor JSON; nothing in it is unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ray_app.core.config import ModelConfig
from ray_app.core.constants import MAX_CARDINALITY, MAX_ENSEMBLE
from ray_app.core.errors import BundleError
from ray_app.core.schema import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS
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


def _refuse(path: Path, name: str, value: Any, expected: str) -> BundleError:
    return BundleError(f"{path}: {name} = {value!r}: expected {expected}")


def _weights_path(directory: Path, meta_path: Path, name: str, value: Any) -> Path:
    """A weights file named by model.json, refused unless it lies inside the bundle folder: a
    bundle comes from the registry, and its model.json must not make us read other files."""
    if not isinstance(value, str) or not value:
        raise _refuse(meta_path, name, value, "a file name inside the bundle folder")
    root = directory.resolve()
    path = (root / value).resolve()  # symlinks and '..' resolved before the check
    if Path(value).is_absolute() or not path.is_relative_to(root) or path == root:
        raise _refuse(meta_path, name, value, f"a file name inside the bundle folder {root}")
    return path


def read_meta(directory: Path) -> tuple[ModelConfig, list[int], list[Path] | None]:
    """model.json, checked: (architecture, vocabulary sizes, an ensemble's weights files or None
    for one model). Sizes are bounded (ModelConfig's limits, MAX_CARDINALITY, MAX_ENSEMBLE),
    since the model is built, and its memory allocated, from them before any weights are read."""
    directory = Path(directory)
    meta_path = directory / MODEL_META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{directory}: not a ray_app model bundle ({exc})") from None
    if not isinstance(meta, dict):
        raise _refuse(meta_path, "the document", type(meta).__name__, "a JSON object")
    raw = meta.get("model_config")
    if not isinstance(raw, dict):
        raise _refuse(meta_path, "model_config", raw, "an object (the architecture)")
    try:
        model_cfg = ModelConfig(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "".join(f".{p}" for p in first["loc"])
        raise _refuse(meta_path, f"model_config{field}", first.get("input"),
                      f"a valid value ({first['msg']})") from None  # fmt: skip
    cards = meta.get("cardinalities")
    n = len(CATEGORICAL_COLUMNS)
    if not (isinstance(cards, list) and len(cards) == n
            and all(type(v) is int and 1 <= v <= MAX_CARDINALITY for v in cards)):  # fmt: skip
        raise _refuse(meta_path, "cardinalities", cards,
                      f"{n} integers in [1, {MAX_CARDINALITY}]")  # fmt: skip
    if "ensemble" not in meta:
        return model_cfg, cards, None
    members = meta["ensemble"]
    if not (isinstance(members, list) and 1 <= len(members) <= MAX_ENSEMBLE
            and all(isinstance(m, dict) for m in members)):  # fmt: skip
        shown = len(members) if isinstance(members, list) else members
        raise _refuse(meta_path, "ensemble", shown, f"1 to {MAX_ENSEMBLE} member objects")
    files = [_weights_path(directory, meta_path, f"ensemble[{i}].weights", m.get("weights"))
             for i, m in enumerate(members)]  # fmt: skip
    return model_cfg, cards, files


def load_model(directory: Path) -> TabularMLP | StackedMLP:
    """Rebuild the model from a bundle directory (an ensemble: its members stacked); never
    unpickles arbitrary objects, reads no file outside the bundle and builds nothing larger
    than the configured bounds (`read_meta`)."""
    directory = Path(directory)
    model_cfg, cardinalities, files = read_meta(directory)
    try:
        states = [torch.load(f, map_location="cpu", weights_only=True)
                  for f in files or [directory / WEIGHTS]]  # fmt: skip
    except OSError as exc:
        raise BundleError(f"{directory}: not a ray_app model bundle ({exc})") from None
    models = []
    for state in states:
        model = build_model(model_cfg, cardinalities)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # missing, unexpected or misshapen tensors
            raise BundleError(f"{directory}: the weights do not match {MODEL_META} "
                              f"({str(exc).splitlines()[0]})") from None  # fmt: skip
        models.append(model.eval())
    return StackedMLP(models).eval() if files is not None else models[0]


def ensemble_size(directory: Path) -> int:
    """How many members a bundle's model averages (1: a single model), from model.json."""
    files = read_meta(directory)[2]
    return len(files) if files is not None else 1
