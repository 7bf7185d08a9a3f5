"""Champion promotion on the same rows, against a real MLflow registry (no Ray needed).

The champion's own logged figure is never the comparison: both models are scored on the
challenger's validation split, the champion through its own bundle and preprocessor.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import log_loss

from ray_app.core.config import AppConfig, FeatureConfig, ModelConfig, TrackingConfig, TrainConfig
from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.ml.bundle import build_model, load_model, save_bundle
from ray_app.ml.features import Preprocessor
from ray_app.ml.scoring import Scorer
from ray_app.tracking import registry as tracking
from ray_app.tracking import store
from ray_app.training.contexts import LocalContext
from ray_app.training.loop import LoopSpec, train_loop
from ray_app.training.rows import EncodedData


@pytest.fixture()
def registry(tmp_path: Path) -> TrackingConfig:
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    store.configure(cfg)
    return cfg


def _register(cfg: TrackingConfig, scorer: Scorer, work: Path, logged_val_loss: float) -> str:
    """Log a bundle as a run that claims `logged_val_loss`, register it, return the version."""
    pre = scorer.preprocessor
    # Named `bundle`, as run_train_job names it: the pyfunc keeps the folder's name.
    state = scorer.model.state_dict()
    bundle = save_bundle(work / "bundle", state, ModelConfig(), pre.cardinalities, pre)
    with mlflow.start_run():
        mlflow.log_metric("best_val_log_loss", logged_val_loss)
        info = store.log_pyfunc(bundle, cfg.registered_model)
    return str(info.registered_model_version)


def _promote(cfg: TrackingConfig, version: str, challenger: Scorer, val) -> dict:
    """promote_if_better with both models scored on `val` in this process."""

    def loss_of(bundle: Path) -> float:
        prob = Scorer.from_bundle(bundle).predict_proba(val[FEATURE_COLUMNS])
        return float(log_loss(val["income"], prob, labels=[0, 1]))

    own = float(log_loss(val["income"], challenger.predict_proba(val[FEATURE_COLUMNS]),
                         labels=[0, 1]))  # fmt: skip
    return tracking.promote_if_better(cfg, version, own, loss_of, len(val)).model_dump()


def _untrained(splits) -> Scorer:
    pre = Preprocessor.fit(splits.train, FeatureConfig())
    return Scorer(pre, build_model(ModelConfig(), pre.cardinalities).eval())


def _trained(splits) -> Scorer:
    pre = Preprocessor.fit(splits.train, FeatureConfig())
    data = EncodedData.from_splits(splits, pre)
    spec = LoopSpec(ModelConfig(), TrainConfig(max_epochs=3), pre.cardinalities)
    result = train_loop(spec, data, LocalContext())
    return Scorer.from_state(pre, ModelConfig(), result.best_state)


def test_a_champion_from_other_data_is_replaced_by_a_better_model_on_the_same_split(
    registry, small_splits, tmp_path
):
    # v1: an untrained model whose run logged a flattering 0.10 on "its own" easy split.
    champion = _untrained(small_splits)
    v1 = _register(registry, champion, tmp_path / "v1", logged_val_loss=0.10)
    MlflowClient().set_registered_model_alias(registry.registered_model, "champion", v1)
    challenger = _trained(small_splits)
    v2 = _register(registry, challenger, tmp_path / "v2", logged_val_loss=0.33)
    result = _promote(registry, v2, challenger, small_splits.val)
    # The old rule (0.33 logged vs 0.10 logged) kept the untrained v1.
    assert result["promoted"] is True and result["champion_version"] == v2
    assert result["previous_champion_version"] == v1
    assert result["previous_champion_val_log_loss"] > 0.6 > 0.45 > result["val_log_loss"]
    assert result["compared_on"] == f"challenger validation split ({len(small_splits.val)} rows)"
    alias = MlflowClient().get_model_version_by_alias(registry.registered_model, "champion")
    assert str(alias.version) == v2
    # Scored like the served model would be: the champion's own bundle re-scores identically.
    with tracking.registry_bundle(f"models:/{registry.registered_model}/{v1}") as bundle:
        rescored = Scorer.from_bundle(bundle).predict_proba(small_splits.val[FEATURE_COLUMNS])
        assert load_model(bundle) is not None
    direct = champion.predict_proba(small_splits.val[FEATURE_COLUMNS])
    assert (abs(rescored - direct) < 1e-6).all()


def test_a_worse_challenger_leaves_the_alias_and_a_better_one_takes_it(
    registry, small_splits, tmp_path
):
    good = _trained(small_splits)
    v1 = _register(registry, good, tmp_path / "v1", logged_val_loss=0.35)
    assert _promote(registry, v1, good, small_splits.val)["reason"] == ("no champion yet")
    worse = _untrained(small_splits)
    v2 = _register(registry, worse, tmp_path / "v2", logged_val_loss=0.01)
    result = _promote(registry, v2, worse, small_splits.val)
    assert result["promoted"] is False and result["champion_version"] == v1
    cfg = AppConfig()
    cfg.train.max_epochs = 6  # longer training: better on the same rows
    pre = good.preprocessor
    data = EncodedData.from_splits(small_splits, pre)
    spec = LoopSpec(cfg.model, cfg.train, pre.cardinalities)
    better = Scorer.from_state(pre, cfg.model, train_loop(spec, data, LocalContext()).best_state)
    v3 = _register(registry, better, tmp_path / "v3", logged_val_loss=0.9)
    result = _promote(registry, v3, better, small_splits.val)
    assert result["val_log_loss"] < result["previous_champion_val_log_loss"]
    assert result["promoted"] is True and result["champion_version"] == v3


def test_the_logged_pyfunc_is_code_and_loads_without_unpickling(registry, small_splits, tmp_path):
    """Models from code: no pickle in the logged model, no CloudPickle warning when logging,
    loading runs the code file with pickle and cloudpickle disabled, and it scores the same."""
    import pickle
    import warnings
    from unittest import mock

    import cloudpickle
    import numpy as np

    scorer = _untrained(small_splits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        version = _register(registry, scorer, tmp_path, 0.5)
    assert not [w for w in caught if "pickle" in str(w.message).lower()], caught
    uri = f"models:/{registry.registered_model}/{version}"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "logged")))
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    refuse = AssertionError("the logged model was unpickled")
    with mock.patch.object(pickle, "load", side_effect=refuse), \
            mock.patch.object(pickle, "loads", side_effect=refuse), \
            mock.patch.object(cloudpickle, "load", side_effect=refuse), \
            mock.patch.object(cloudpickle, "loads", side_effect=refuse):  # fmt: skip
        model = mlflow.pyfunc.load_model(uri)
    rows = small_splits.test[FEATURE_COLUMNS].head(20)
    np.testing.assert_allclose(model.predict(rows)["probability"], scorer.predict_proba(rows),
                               atol=1e-6)  # fmt: skip


def test_evaluate_reads_the_bundle_and_runs_no_code_from_the_registry(registry, small_splits,
                                                                     tmp_path):  # fmt: skip
    """`ray-app evaluate` and the pipeline's evaluate step load the registered version as its
    bundle (weights + JSON): a logged code file that raises on import, and a pyfunc loader
    that refuses, change nothing. (Loading it as a pyfunc does run that file.)"""
    from unittest import mock

    from ray_app.platform.pipeline.steps import evaluate_step
    from ray_app.training.jobs import run_evaluate_job

    version = _register(registry, _untrained(small_splits), tmp_path, 0.5)
    client = MlflowClient()
    client.set_registered_model_alias(registry.registered_model, "champion", version)
    model_id = client.get_model_version(registry.registered_model, version).source
    logged = client.get_logged_model(model_id.removeprefix("models:/")).artifact_location
    code = Path(logged.removeprefix("file://")) / "mlflow_model.py"
    code.write_text('raise RuntimeError("code from the registry ran")\n')
    uri = f"models:/{registry.registered_model}/{version}"
    with pytest.raises(MlflowException, match="code from the registry ran"):
        mlflow.pyfunc.load_model(uri)  # the planted file is what a pyfunc load would run

    refuse = AssertionError("evaluate loaded the model as a pyfunc")
    cfg = AppConfig()
    cfg.tracking = registry
    with mock.patch.object(mlflow.pyfunc, "load_model", side_effect=refuse):
        result = run_evaluate_job(cfg, uri)
        step = evaluate_step({"backend": "local", "tracking_uri": registry.tracking_uri},
                             {"model_version": float(version)})  # fmt: skip
    assert result.test_log_loss > 0.0 and result.model_uri == uri
    assert step["improved"] is True
    assert step["metrics"]["test_log_loss"] == pytest.approx(result.test_log_loss)
