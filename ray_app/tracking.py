"""MLflow: tracking set-up, the raw-row pyfunc model, registry and the champion alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from ray_app.artifacts import Scorer
from ray_app.config import TrackingConfig
from ray_app.data import CATEGORICAL_COLUMNS, FEATURE_COLUMNS, NUMERIC_COLUMNS, normalise_column

CHAMPION_METRIC = "best_val_log_loss"
PACKAGE_DIR = Path(__file__).resolve().parent


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    mlflow.set_tracking_uri(cfg.tracking_uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return str(experiment.experiment_id)
    artifact_location = None
    if cfg.tracking_uri.startswith("sqlite:///"):
        # Keep artifacts beside the sqlite file rather than in whatever the cwd is.
        db = Path(cfg.tracking_uri.removeprefix("sqlite:///")).resolve()
        artifact_location = (db.parent / "mlartifacts").as_uri()
    experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


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
        prob = self.scorer.predict_proba(frame)
        return pd.DataFrame({"probability": prob, "label": np.where(prob >= 0.5, ">50K", "<=50K")})


def signature() -> ModelSignature:
    """Raw-row input schema: categoricals may be missing ('?' in the UCI files)."""
    inputs = Schema(
        [
            ColSpec("double", c) if c in NUMERIC_COLUMNS else ColSpec("string", c, required=False)
            for c in FEATURE_COLUMNS
        ]
    )
    outputs = Schema([ColSpec("double", "probability"), ColSpec("string", "label")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(frame: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """A few complete raw rows for the logged model's input example."""
    complete = frame[FEATURE_COLUMNS].dropna(subset=CATEGORICAL_COLUMNS)
    return complete.head(n).reset_index(drop=True)


def log_pyfunc(bundle_dir: Path, example: pd.DataFrame, registered_name: str | None) -> Any:
    """Log the bundle as an MLflow pyfunc (and register it when a name is given)."""
    import sklearn
    import torch

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=AdultIncomeModel(),
        artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(PACKAGE_DIR)],
        signature=signature(),
        input_example=example,
        # Explicit requirements: skips MLflow's slow inference by re-importing the model.
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"pandas=={pd.__version__}",
            f"numpy=={np.__version__}",
            f"scikit-learn=={sklearn.__version__}",
            f"mlflow=={mlflow.__version__}",
            "pydantic>=2",
        ],
        registered_model_name=registered_name,
    )


def promote_if_better(cfg: TrackingConfig, version: str, run_id: str) -> dict[str, Any]:
    """Move the champion alias to `version` only if it beats the champion on val log loss."""
    client = MlflowClient()
    new_score = client.get_run(run_id).data.metrics[CHAMPION_METRIC]
    try:
        current = client.get_model_version_by_alias(cfg.registered_model, cfg.champion_alias)
    except MlflowException:
        current = None
    old_score = None
    if current is not None and current.run_id:
        old_score = client.get_run(current.run_id).data.metrics.get(CHAMPION_METRIC)
    promoted = old_score is None or new_score < old_score
    if promoted:
        client.set_registered_model_alias(cfg.registered_model, cfg.champion_alias, version)
    return {
        "promoted": promoted,
        "champion_version": version if promoted else (str(current.version) if current else None),
        "previous_champion_val_log_loss": old_score,
        "val_log_loss": new_score,
    }
