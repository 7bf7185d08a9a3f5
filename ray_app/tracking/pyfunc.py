"""The MLflow pyfunc for users outside ray_app: raw rows in (the 14 features by name),
probability, the ensemble members' spread (0 for one model) and label out; preprocessing
inside. ray_app itself never loads it (it loads bundles as weights + JSON): loading a pyfunc
runs the logged code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from ray_app.core.schema import label_names
from ray_app.data.layouts import normalise_column
from ray_app.ml.scoring import Scorer


class AdultIncomeModel(PythonModel):
    """Scores raw Adult rows (the 14 features by name); preprocessing is inside the model."""

    # The signature is explicit (raw-row DataFrame schema); MLflow's type-hint wrapping of
    # predict() would otherwise warn at class creation and expect list-shaped inputs.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        self.scorer = Scorer.from_bundle(Path(context.artifacts["bundle"]))

    # No annotations here: MLflow would try (and fail) to derive a signature from them.
    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input).rename(columns=normalise_column)
        prob, spread = self.scorer.score_encoded(*self.scorer.preprocessor.transform(frame))
        return pd.DataFrame({"probability": prob, "spread": spread, "label": label_names(prob)})
