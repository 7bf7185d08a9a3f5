"""The MLflow model registry: versions, the champion alias and the rule that moves it, and the
bundle of a registered version."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from ray_app.core.config import TrackingConfig
from ray_app.core.errors import UserError
from ray_app.core.redact import redact
from ray_app.ml.bundle import PREPROCESSOR
from ray_app.tracking.history import move_alias


class ModelUnavailable(UserError):
    """No model to load yet, for a reason a server waits out (it serves 'no-model' and looks
    again): the alias names no version, or the registry does not answer."""


class NoModelYet(ModelUnavailable):
    """The registry has no version behind the alias yet (a fresh MLflow)."""


class RegistryUnreachable(ModelUnavailable):
    """The registry did not answer (MLflow not up yet, a network policy, a wrong URI)."""


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
        where = redact(mlflow.get_tracking_uri())
        raise RegistryUnreachable(f"{uri}: the registry at {where} did not answer "
                                  f"({redact(_first_line(exc.message))})") from None  # fmt: skip
    except OSError as exc:  # a sqlite file that cannot be opened, a socket error
        raise RegistryUnreachable(f"{uri}: the registry did not answer ({redact(str(exc))})"
                                  ) from None  # fmt: skip
    return f"models:/{name}/{version}", version


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "no message"


@contextmanager
def registry_bundle(uri: str) -> Iterator[Path]:
    """The model bundle (weights + preprocessor JSON) of a logged model, downloaded into a
    temporary folder that is removed when the block ends: read what you need inside it.

    MLflow's own default is a fresh temporary folder per call that nobody removes: a server
    reloading versions, or a monitor run over many, filled the disk with copies."""
    with tempfile.TemporaryDirectory(prefix="ray_app_bundle_") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as exc:
            raise UserError(f"cannot load model {uri!r}: {redact(exc.message)}") from None
        bundle = local / "artifacts" / "bundle"
        if not (bundle / PREPROCESSOR).exists():
            raise UserError(f"{uri}: not a ray_app model (no artifacts/bundle)")
        yield bundle


class Promotion(BaseModel):
    """What the champion rule decided for a registered version (evaluation/promotion.json)."""

    model_config = ConfigDict(extra="forbid")

    promoted: bool
    champion_version: str
    previous_champion_version: str | None
    compared_on: str
    val_log_loss: float
    previous_champion_val_log_loss: float | None
    reason: str


def better(challenger_loss: float, champion_loss: float | None) -> bool:
    """The champion rule: a challenger takes the alias when there is no champion to compare
    with, or when its log loss on the same rows is strictly lower."""
    return champion_loss is None or challenger_loss < champion_loss


def promote_if_better(
    cfg: TrackingConfig,
    version: str,
    challenger_loss: float,
    loss_of: Callable[[Path], float],
    rows: int,
) -> Promotion:
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
            with registry_bundle(cfg.version_uri(current.version)) as bundle:
                old_score = loss_of(bundle)
            reason = "val log loss on the challenger's validation split"
        except Exception as exc:  # an unreadable champion is not a better model
            reason = (f"champion v{current.version} could not be re-scored "
                      f"({redact(str(exc))}); replaced")  # fmt: skip
    promoted = better(challenger_loss, old_score)
    if promoted:
        figures = {"val_log_loss": challenger_loss, "previous_val_log_loss": old_score}
        move_alias(cfg, version, "promotion", reason, figures)
    previous = None if current is None else str(current.version)
    return Promotion(
        promoted=promoted,
        champion_version=version if promoted else str(previous),
        previous_champion_version=previous,
        compared_on=f"challenger validation split ({rows} rows)",
        val_log_loss=challenger_loss,
        previous_champion_val_log_loss=old_score,
        reason=reason,
    )
