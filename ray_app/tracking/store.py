"""The MLflow tracking store: where runs go, and the model logged with every training run
(the bundle as artifacts, a models-from-code pyfunc, a raw-row signature)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from ray_app.core.config import TrackingConfig
from ray_app.core.redact import has_credentials
from ray_app.core.schema import FEATURE_COLUMNS, NUMERIC_COLUMNS

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # ray_app/, shipped with the pyfunc
# The logged input example: an invented record (not a training row: users' own data may be
# personal), valid under the API's schema.
EXAMPLE_RECORD: dict[str, Any] = {
    "age": 39.0, "workclass": "Private", "fnlwgt": 190_000.0, "education": "HS-grad",
    "education_num": 9.0, "marital_status": "Married-civ-spouse", "occupation": "Craft-repair",
    "relationship": "Husband", "race": "White", "sex": "Male", "capital_gain": 0.0,
    "capital_loss": 0.0, "hours_per_week": 40.0, "native_country": "United-States",
}  # fmt: skip


def _point_at(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    if has_credentials(uri):
        # MLflow prints "View run ... at: <tracking URI>/#/..." when a run ends, credentials
        # included, into the job's log: not with a URI that carries them.
        MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.set(True)


def set_tracking(cfg: TrackingConfig) -> None:
    """Point MLflow at the store (reading only: no experiment is created)."""
    _point_at(cfg.tracking_uri)


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    _point_at(cfg.tracking_uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return str(experiment.experiment_id)
    artifact_location = None
    if cfg.tracking_uri.startswith("sqlite:///"):
        # Keep artifacts beside the sqlite file rather than in whatever the cwd is.
        db = Path(cfg.tracking_uri.removeprefix("sqlite:///")).resolve()
        artifact_location = (db.parent / "mlartifacts").as_uri()
    try:
        experiment_id = mlflow.create_experiment(cfg.experiment,
                                                 artifact_location=artifact_location)  # fmt: skip
    except mlflow.exceptions.MlflowException as exc:
        # Two jobs starting at once (a search and a training run) both saw no experiment:
        # the other one made it first. Use that one.
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        made = mlflow.get_experiment_by_name(cfg.experiment)
        if made is None:
            raise
        experiment_id = made.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def signature() -> ModelSignature:
    """Raw-row input schema: categoricals may be missing ('?' in the UCI files)."""
    inputs = Schema(
        [
            ColSpec("double", c) if c in NUMERIC_COLUMNS else ColSpec("string", c, required=False)
            for c in FEATURE_COLUMNS
        ]
    )
    outputs = Schema([ColSpec("double", "probability"), ColSpec("double", "spread"),
                      ColSpec("string", "label")])  # fmt: skip
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example() -> pd.DataFrame:
    """The logged model's input example: one invented record (EXAMPLE_RECORD)."""
    return pd.DataFrame([EXAMPLE_RECORD], columns=FEATURE_COLUMNS)


def log_pyfunc(bundle_dir: Path, registered_name: str | None) -> Any:
    """Log the bundle as an MLflow pyfunc (and register it when a name is given)."""
    import sklearn
    import torch

    return mlflow.pyfunc.log_model(
        name="model",
        # Models from code: the file is logged and run at load time, nothing is pickled.
        python_model=str(Path(__file__).with_name("mlflow_model.py")),
        artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(PACKAGE_DIR)],
        signature=signature(),
        input_example=input_example(),
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
