"""Hostile model.json files: a bundle comes from the registry, so its metadata may name files
outside the bundle or sizes that would allocate without limit. Each is refused with a
BundleError (a UserError) naming the file, the field, the value and what was expected."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from ray_app.core.config import ModelConfig
from ray_app.core.constants import MAX_CARDINALITY, MAX_EMBEDDING_DIM, MAX_ENSEMBLE
from ray_app.core.errors import BundleError, UserError
from ray_app.ml.bundle import MODEL_META, build_model, ensemble_size, load_model, save_bundle

CARDS = [5, 7, 3, 2, 4, 6, 3, 9]
SMALL = ModelConfig(depth=1, width=8, n_frequencies=4, num_embedding_dim=4, cat_embedding_dim=4)


def _bundle(root: Path, members: int = 2) -> Path:
    """A valid small ensemble bundle, and a valid weights file outside it (root/outside.pt)."""
    states = [build_model(SMALL, CARDS).state_dict() for _ in range(members)]
    torch.save(states[0], root / "outside.pt")
    return save_bundle(root / "bundle", states, SMALL, CARDS)


def _rewrite(bundle: Path, **changes: Any) -> None:
    meta = json.loads((bundle / MODEL_META).read_text())
    for key, value in changes.items():
        if key.startswith("model_config."):
            meta["model_config"][key.split(".", 1)[1]] = value
        else:
            meta[key] = value
    (bundle / MODEL_META).write_text(json.dumps(meta))


def _refused(bundle: Path, *parts: str) -> str:
    with pytest.raises(BundleError) as caught:
        load_model(bundle)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert str(bundle / MODEL_META) in message, message
    for part in parts:
        assert part in message, message
    return message


def test_a_valid_bundle_still_loads(tmp_path: Path):
    bundle = _bundle(tmp_path)
    assert ensemble_size(bundle) == 2 and load_model(bundle).members == 2


@pytest.mark.parametrize("weights", ["ABS", "../outside.pt", "sub/../../outside.pt"])
def test_weights_outside_the_bundle_are_refused(tmp_path: Path, weights: str):
    bundle = _bundle(tmp_path)
    value = str(tmp_path / "outside.pt") if weights == "ABS" else weights
    _rewrite(bundle, ensemble=[{"weights": "member-0.pt"}, {"weights": value}])
    _refused(bundle, "ensemble[1].weights", repr(value), "inside the bundle folder")


def test_a_symlink_out_of_the_bundle_is_refused(tmp_path: Path):
    bundle = _bundle(tmp_path)
    (bundle / "member-1.pt").unlink()
    (bundle / "member-1.pt").symlink_to(tmp_path / "outside.pt")
    _refused(bundle, "ensemble[1].weights", "'member-1.pt'", "inside the bundle folder")


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("n_frequencies", 100_000, "512"),
        ("num_embedding_dim", MAX_EMBEDDING_DIM + 1, str(MAX_EMBEDDING_DIM)),
        ("cat_embedding_dim", 1000, str(MAX_EMBEDDING_DIM)),
        ("width", 1_000_000, "4096"),
        ("depth", 1000, "8"),
    ],
)
def test_architecture_sizes_past_the_bounds_are_refused(tmp_path: Path, field: str,
                                                        value: int, limit: str):  # fmt: skip
    bundle = _bundle(tmp_path)
    _rewrite(bundle, **{f"model_config.{field}": value})
    message = _refused(bundle, f"model_config.{field}", str(value))
    assert re.search(rf"less than or equal to {limit}\b", message), message


@pytest.mark.parametrize("cards", [[MAX_CARDINALITY + 1] * 8, [5, 7, 3], "many", [5.5] * 8])
def test_vocabulary_sizes_past_the_bounds_are_refused(tmp_path: Path, cards: Any):
    bundle = _bundle(tmp_path)
    _rewrite(bundle, cardinalities=cards)
    _refused(bundle, "cardinalities", repr(cards), f"8 integers in [1, {MAX_CARDINALITY}]")


def test_an_ensemble_past_the_bound_is_refused(tmp_path: Path):
    bundle = _bundle(tmp_path)
    _rewrite(bundle, ensemble=[{"weights": "member-0.pt"}] * (MAX_ENSEMBLE + 1))
    _refused(bundle, "ensemble", str(MAX_ENSEMBLE + 1), f"1 to {MAX_ENSEMBLE} member")
    with pytest.raises(BundleError):
        ensemble_size(bundle)


def test_a_missing_architecture_is_refused_not_defaulted(tmp_path: Path):
    bundle = _bundle(tmp_path)
    _rewrite(bundle, model_config=None)
    _refused(bundle, "model_config = None", "expected an object")
