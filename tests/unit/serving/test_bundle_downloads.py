"""Downloaded bundles leave no folders behind: every load goes through a temporary folder that
is removed when the loading is done, and the Serve replicas keep working without it (they
hold the preprocessor, drift reference and weights in memory).

MLflow's local artifact store hands back its own folder instead of copying; here it copies,
as a remote store (an MLflow server, S3) does, through MLflow's own generic download code,
which makes a fresh temporary folder per call unless given one."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from ray_app.core.config import FeatureConfig, ModelConfig, ServeConfig
from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.data.stats import column_stats
from ray_app.ml.bundle import build_model, save_bundle
from ray_app.ml.drift import build_reference, save_reference
from ray_app.ml.features import Preprocessor
from ray_app.ml.scoring import Scorer
from ray_app.serving.graph import Model, Preprocess
from ray_app.tracking.registry import registry_bundle

LOADS = 4


@pytest.fixture()
def logged(small_splits, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """(artifact URI of a logged model with a bundle, the TMPDIR every download lands in)."""
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    model = build_model(ModelConfig(), pre.cardinalities).eval()
    bundle = save_bundle(tmp_path / "store" / "model" / "artifacts" / "bundle",
                         model.state_dict(), ModelConfig(), pre.cardinalities, pre)  # fmt: skip
    reference = build_reference(column_stats(small_splits.train), pre,
                                np.linspace(0.05, 0.95, 50), {"test_log_loss": 0.4})  # fmt: skip
    save_reference(reference, bundle)
    monkeypatch.setattr(LocalArtifactRepository, "download_artifacts",
                        ArtifactRepository.download_artifacts)  # fmt: skip
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    return (tmp_path / "store" / "model").as_uri(), tmpdir


def test_loading_a_registry_bundle_n_times_leaves_no_folder(logged, small_splits):
    uri, tmpdir = logged
    rows = small_splits.test[FEATURE_COLUMNS].head(20)
    scores = []
    for _ in range(LOADS):
        with registry_bundle(uri) as bundle:
            assert bundle.is_relative_to(tmpdir)  # it did download, into TMPDIR
            scorer = Scorer.from_bundle(bundle)
        scores.append(scorer.predict_proba(rows))
    assert list(tmpdir.iterdir()) == []
    np.testing.assert_allclose(scores[0], scores[-1])


def test_serve_replicas_load_leave_no_folder_and_still_score(logged, small_splits, tmp_path):
    uri, tmpdir = logged
    args = ServeConfig(model_uri=uri, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                       drift_min_rows=1).model_dump()  # fmt: skip
    preprocess = Preprocess.func_or_class(args)
    model = Model.func_or_class(args)
    for _ in range(LOADS):
        preprocess._load()
        version = preprocess.loaded[1]
        model.models.clear()
        asyncio.run(model._model(version))  # the version Preprocess stamps
    assert list(tmpdir.iterdir()) == []
    # Scored from memory only: the folders are gone.
    rows = small_splits.test[FEATURE_COLUMNS].head(8).astype(object)
    columns = {c: [None if v != v else v for v in rows[c]] for c in FEATURE_COLUMNS}
    # The methods under @serve.batch (the batching queue itself needs a Serve replica).
    (encoded,) = asyncio.run(type(preprocess).__call__.__wrapped__(preprocess, [columns]))
    ((probability, spread, scored_by),) = asyncio.run(
        type(model).__call__.__wrapped__(model, [encoded]))  # fmt: skip
    assert scored_by == version and len(probability) == len(spread) == 8
    assert preprocess.drift() is not None  # the drift reference was read before removal
