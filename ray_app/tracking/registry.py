"""MLflow: tracking set-up, the raw-row pyfunc model, registry and the champion alias."""

from __future__ import annotations

from collections.abc import Callable
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

from ray_app.core.config import TrackingConfig
from ray_app.core.errors import UserError
from ray_app.data.files import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    normalise_column,
)
from ray_app.ml.bundle import PREPROCESSOR, Scorer

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # ray_app/, shipped with the pyfunc


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
        # Models from code: the file is logged and run at load time, nothing is pickled.
        python_model=str(Path(__file__).with_name("mlflow_model.py")),
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


class NoModelYet(UserError):
    """The registry has no version behind the alias yet (a fresh MLflow): serve 'no-model'."""


def _missing(exc: Exception) -> bool:
    """MLflow's answers for a registered model or alias that does not exist (yet)."""
    code = getattr(exc, "error_code", "")
    text = str(exc)
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
    )


def pin(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """(pinned URI, version): 'models:/m@champion' -> ('models:/m/3', '3').

    'models:/m/3' stays as it is; other URIs (runs:/...) are their own version. A missing
    alias raises NoModelYet; a missing pinned version is a real error (DEPLOY_FAILED).
    """
    if not uri.startswith("models:/") or "@" not in uri:
        return uri, (uri.removeprefix("models:/").partition("/")[2] or uri)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    name, alias = uri.removeprefix("models:/").split("@", 1)
    try:
        version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if _missing(exc):
            raise NoModelYet(f"{uri}: no model version is registered under it yet") from None
        raise
    return f"models:/{name}/{version}", version


def registry_bundle(uri: str) -> Path:
    """The model bundle (weights + preprocessor JSON) of a logged model, downloaded."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    bundle = local / "artifacts" / "bundle"
    if not (bundle / PREPROCESSOR).exists():
        raise UserError(f"{uri}: not a ray_app model (no artifacts/bundle)")
    return bundle


def promote_if_better(
    cfg: TrackingConfig,
    version: str,
    challenger_loss: float,
    loss_of: Callable[[Path], float],
    rows: int,
) -> dict[str, Any]:
    """Move the champion alias to `version` only if it beats the champion on the same rows.

    `challenger_loss` is the challenger's log loss on its validation split; `loss_of(bundle)`
    scores another model bundle on those same rows. The champion is scored through its own
    bundle and preprocessor: figures each model logged on its own split are not comparable
    when the data or the split differ. A champion that cannot be re-scored is replaced (and
    the reason says why).
    """
    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(cfg.registered_model, cfg.champion_alias)
    except MlflowException:
        current = None
    old_score, reason = None, "no champion yet"
    if current is not None:
        try:
            uri = f"models:/{cfg.registered_model}/{current.version}"
            old_score = loss_of(registry_bundle(uri))
            reason = "val log loss on the challenger's validation split"
        except Exception as exc:  # an unreadable champion is not a better model
            reason = f"champion v{current.version} could not be re-scored ({exc}); replaced"
    promoted = old_score is None or challenger_loss < old_score
    if promoted:
        client.set_registered_model_alias(cfg.registered_model, cfg.champion_alias, version)
    return {
        "promoted": promoted,
        "champion_version": version if promoted else str(current.version),  # type: ignore[union-attr]
        "previous_champion_version": None if current is None else str(current.version),
        "compared_on": f"challenger validation split ({rows} rows)",
        "val_log_loss": challenger_loss,
        "previous_champion_val_log_loss": old_score,
        "reason": reason,
    }
