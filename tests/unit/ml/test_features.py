"""Preprocessing tests: fitted on train only, OOV bucket, JSON round trip, scaling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ray_app.core.config import FeatureConfig
from ray_app.core.errors import UserError
from ray_app.core.schema import CATEGORICAL_COLUMNS
from ray_app.ml.features import OOV_INDEX, Preprocessor


@pytest.mark.parametrize("scaling", ["quantile_normal", "standard"])
def test_json_round_trip_gives_identical_outputs(splits, tmp_path: Path, scaling: str):
    pre = Preprocessor.fit(splits.train, FeatureConfig(numeric_scaling=scaling))
    path = pre.save(tmp_path / "pre.json")
    again = Preprocessor.load(path)
    for a, b in zip(pre.transform(splits.test), again.transform(splits.test), strict=True):
        np.testing.assert_array_equal(a, b)
    doc = json.loads(path.read_text())
    assert doc["format"] == "ray_app.preprocessor" and doc["version"] == 1


def test_unseen_category_goes_to_oov_and_missing_has_its_own_slot(splits):
    pre = Preprocessor.fit(splits.train, FeatureConfig())
    rows = splits.test.head(3).copy()
    rows.loc[0, "occupation"] = "Astronaut"
    rows.loc[1, "occupation"] = None
    x_cat, _ = pre.transform(rows)
    j = CATEGORICAL_COLUMNS.index("occupation")
    assert x_cat[0, j] == OOV_INDEX
    assert x_cat[1, j] != OOV_INDEX  # '?' was seen in training as its own category


def test_vocabulary_comes_from_the_training_split_only(splits):
    train = splits.train[splits.train["native_country"] != "Holand-Netherlands"]
    pre = Preprocessor.fit(train, FeatureConfig())
    assert "Holand-Netherlands" not in pre.vocab["native_country"]


def test_quantile_normal_scaling_is_monotone_and_roughly_standard(splits):
    pre = Preprocessor.fit(splits.train, FeatureConfig())
    _, x_num = pre.transform(splits.train)
    age = x_num[:, 0]
    order = np.argsort(splits.train["age"].to_numpy(), kind="stable")
    assert np.all(np.diff(age[order]) >= -1e-6)
    assert abs(float(age.mean())) < 0.1 and 0.8 < float(age.std()) < 1.2
    assert np.isfinite(x_num).all()


def test_wrong_document_is_rejected(tmp_path: Path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "other", "version": 9}))
    with pytest.raises(UserError, match=r"not a ray_app\.preprocessor v1"):
        Preprocessor.load(path)
