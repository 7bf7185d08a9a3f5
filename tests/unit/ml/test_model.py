"""Model tests: shapes, gradients, bundle round trip, and that the loop learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ray_app.core.config import AppConfig, FeatureConfig, ModelConfig, TrainConfig
from ray_app.ml.bundle import build_model, ensemble_size, load_model, save_bundle
from ray_app.ml.features import Preprocessor
from ray_app.ml.model import StackedMLP
from ray_app.ml.scoring import Scorer
from ray_app.training.contexts import LocalContext
from ray_app.training.loop import LoopSpec, train_loop
from ray_app.training.rows import EncodedData


@pytest.mark.parametrize("num_embedding", ["plr", "none"])
def test_forward_shapes_and_gradients(num_embedding: str):
    cfg = ModelConfig(num_embedding=num_embedding, depth=3, width=32)
    model = build_model(cfg, cardinalities=[5, 7, 3, 2, 4, 6, 3, 9])
    x_cat = torch.randint(0, 2, (11, 8))
    x_num = torch.randn(11, 6)
    out = model(x_cat, x_num)
    assert out.shape == (11,)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_plr_embedding_shape():
    from ray_app.ml.model import PeriodicEmbedding

    emb = PeriodicEmbedding(n_features=6, n_frequencies=4, sigma=10.0, dim=5)
    assert emb(torch.randn(3, 6)).shape == (3, 6, 5)


def test_bundle_round_trip_predicts_identically(small_splits, tmp_path: Path):
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    model = build_model(ModelConfig(), pre.cardinalities).eval()
    bundle = save_bundle(tmp_path / "b", model.state_dict(), ModelConfig(), pre.cardinalities, pre)
    reloaded = Scorer.from_bundle(bundle)
    original = Scorer(pre, model).predict_proba(small_splits.test.head(50))
    np.testing.assert_allclose(reloaded.predict_proba(small_splits.test.head(50)), original)
    assert isinstance(load_model(bundle), torch.nn.Module)


@pytest.mark.parametrize("num_embedding", ["plr", "none"])
def test_stacked_members_score_as_each_member_alone(num_embedding: str):
    """One stacked pass over K members = K separate forward passes (same logits)."""
    cfg = ModelConfig(num_embedding=num_embedding, depth=3, width=32)
    cards = [5, 7, 3, 2, 4, 6, 3, 9]
    members = []
    for seed in range(4):
        torch.manual_seed(seed)
        members.append(build_model(cfg, cards).eval())
    x_cat = torch.stack([torch.randint(0, n, (37,)) for n in cards], dim=1)
    x_num = torch.randn(37, 6)
    with torch.inference_mode():
        stacked = StackedMLP(members).eval()(x_cat, x_num)
        one_by_one = torch.stack([m(x_cat, x_num) for m in members])
    assert stacked.shape == (4, 37)
    torch.testing.assert_close(stacked, one_by_one, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one model config"):
        StackedMLP([members[0], build_model(ModelConfig(width=16), cards)])


def test_ensemble_bundle_averages_its_members_probabilities(small_splits, tmp_path: Path):
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(build_model(ModelConfig(), pre.cardinalities).eval())
    bundle = save_bundle(tmp_path / "e", [m.state_dict() for m in members], ModelConfig(),
                         pre.cardinalities, pre, [{"seed": s} for s in range(3)])  # fmt: skip
    assert sorted(p.name for p in bundle.glob("*.pt")) == ["member-0.pt", "member-1.pt",
                                                           "member-2.pt"]  # fmt: skip
    assert ensemble_size(bundle) == 3 and isinstance(load_model(bundle), StackedMLP)
    rows = small_splits.test.head(50)
    alone = [Scorer(pre, m).predict_proba(rows) for m in members]
    scorer = Scorer.from_bundle(bundle)
    assert scorer.members == 3
    np.testing.assert_allclose(scorer.predict_proba(rows), np.mean(alone, axis=0), rtol=1e-5)
    np.testing.assert_allclose(scorer.predict_members(*pre.transform(rows)), alone, rtol=1e-5)


def test_local_loop_learns_beyond_the_base_rate(small_splits):
    cfg = AppConfig()
    pre = Preprocessor.fit(small_splits.train, cfg.features)
    data = EncodedData.from_splits(small_splits, pre)
    ctx = LocalContext()
    result = train_loop(
        LoopSpec(cfg.model, TrainConfig(max_epochs=3), pre.cardinalities), data, ctx
    )
    assert result.meta["epoch"] == 3 and result.best_state is not None and len(ctx.reports) == 3
    base_rate_accuracy = 1 - float(data.val_y.mean())
    assert ctx.reports[-1]["val_accuracy"] > base_rate_accuracy + 0.03
    assert ctx.reports[-1]["train_loss"] < ctx.reports[0]["train_loss"]


def test_early_stopping_stops_before_max_epochs(small_splits):
    cfg = AppConfig()
    pre = Preprocessor.fit(small_splits.train, cfg.features)
    data = EncodedData.from_splits(small_splits, pre)
    ctx = LocalContext()
    # A large learning rate overfits 2,400 rows within a few epochs.
    spec = LoopSpec(cfg.model, TrainConfig(max_epochs=40, patience=2, lr=0.01), pre.cardinalities)
    meta = train_loop(spec, data, ctx).meta
    assert meta["epoch"] < 40
    assert meta["bad_epochs"] == 2


def test_a_scoring_actor_builds_the_bundle_from_its_bytes_not_a_path(small_splits, tmp_path):
    """BatchScorer gets the bundle's files (what Ray Data's actors on other nodes receive), not
    the driver's folder: the folder is gone before it scores, and it scores as the folder did."""
    import shutil

    import pyarrow as pa

    from ray_app.ml.scoring import BatchScorer, bundle_files

    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    model = build_model(ModelConfig(), pre.cardinalities).eval()
    bundle = save_bundle(tmp_path / "b", model.state_dict(), ModelConfig(), pre.cardinalities, pre)
    files = bundle_files(bundle)
    assert {"model.pt", "model.json", "preprocessor.json"} <= set(files)
    expected = Scorer.from_bundle(bundle).predict_proba(small_splits.test.head(50))
    shutil.rmtree(bundle)
    scored = BatchScorer(files, "7")(pa.Table.from_pandas(small_splits.test.head(50)))
    np.testing.assert_allclose(scored.column("probability").to_numpy(), expected)
    assert set(scored.column("model_version").to_pylist()) == {"7"}
