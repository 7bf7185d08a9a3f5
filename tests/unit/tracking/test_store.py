"""The logged model's input example is invented, not a row of anyone's data, and valid."""

from __future__ import annotations

import pandas as pd
from mlflow.models import validate_schema

from ray_app.core.schema import (
    CATEGORICAL_COLUMNS,
    CATEGORIES,
    FEATURE_COLUMNS,
    NUMERIC_BOUNDS,
    NUMERIC_COLUMNS,
)
from ray_app.serving.schemas import Record
from ray_app.tracking.store import input_example, signature


def test_the_input_example_is_no_row_of_the_data_and_fits_the_signature(splits):
    example = input_example()
    assert list(example.columns) == FEATURE_COLUMNS and len(example) >= 1
    validate_schema(example, signature().inputs)  # raises if it does not fit
    for record in example.to_dict("records"):
        assert all(record[c] in CATEGORIES[c] for c in CATEGORICAL_COLUMNS), record
        assert all(NUMERIC_BOUNDS[c][0] <= record[c] <= NUMERIC_BOUNDS[c][1]
                   for c in NUMERIC_COLUMNS), record  # fmt: skip
        Record(**record)  # and the served API accepts it
    rows = pd.concat([splits.train, splits.val, splits.test])[FEATURE_COLUMNS]
    same = rows.merge(example, on=FEATURE_COLUMNS, how="inner")
    assert same.empty, f"the input example is a row of the data: {same.to_dict('records')}"
