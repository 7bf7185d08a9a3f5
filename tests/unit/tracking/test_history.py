"""The champion alias's recorded moves and rollback, on a real (sqlite) MLflow registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ray_app.cli.app import app
from ray_app.core.config import TrackingConfig
from ray_app.core.errors import UserError
from ray_app.ml.bundle import PREPROCESSOR
from ray_app.tracking import history
from ray_app.tracking.registry import promote_if_better

LOSSES = (0.40, 0.35, 0.38, 0.30, 0.33)  # validation losses of versions 1..5


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Five registered versions whose bundles carry their own validation loss (a file the
    test's loss_of reads), in a sqlite registry built once (MLflow's schema setup is slow)."""
    work = tmp_path_factory.mktemp("registry")
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    client = MlflowClient()
    # Not mlflow.set_experiment: the active experiment is process state, and a later test in
    # this worker (another store, no experiment 1) would log into it.
    experiment = client.create_experiment("history-test")
    name = TrackingConfig().registered_model
    client.create_registered_model(name)
    for version, loss in enumerate(LOSSES, start=1):
        bundle = work / f"v{version}" / "artifacts" / "bundle"
        bundle.mkdir(parents=True)
        (bundle / PREPROCESSOR).write_text("{}")
        (bundle / "loss.txt").write_text(str(loss))
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(work / f"v{version}"), "model")
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return work / "mlflow.db"


@pytest.fixture()
def registry(built: Path, tmp_path: Path) -> TrackingConfig:
    """A copy of the built registry (no alias, no history yet) for one test."""
    shutil.copy(built, tmp_path / "mlflow.db")
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(cfg.tracking_uri)
    return cfg


def _loss(bundle: Path) -> float:
    return float((bundle / "loss.txt").read_text())


def _promote_all(cfg: TrackingConfig) -> list[bool]:
    """Versions 1..5 each challenge the champion, as five training runs would."""
    return [promote_if_better(cfg, str(v), loss, _loss, 600).promoted
            for v, loss in enumerate(LOSSES, start=1)]  # fmt: skip


def test_each_promotion_is_recorded_once_with_its_figures(registry):
    assert _promote_all(registry) == [True, True, False, True, False]
    moves = history.history(registry)
    assert [(m.from_version, m.to_version, m.kind) for m in moves] == [
        (None, "1", "promotion"), ("1", "2", "promotion"), ("2", "4", "promotion")]  # fmt: skip
    assert moves[2].figures == {"val_log_loss": 0.30, "previous_val_log_loss": 0.35}
    assert moves[0].figures["previous_val_log_loss"] is None
    assert [m.time for m in moves] == sorted(m.time for m in moves)
    assert history.current(registry) == "4"


def test_rollback_walks_back_one_champion_at_a_time_and_stops_at_the_first(registry):
    _promote_all(registry)  # champions 1, 2, 4
    assert history.rollback(registry).to_version == "2"
    assert history.rollback(registry).to_version == "1"  # further back, not forward to 4
    with pytest.raises(UserError, match="nothing to roll back to: v1 is the first champion"):
        history.rollback(registry)
    history.move_alias(registry, "5", "manual", "hand-picked")
    back = history.rollback(registry)
    assert (back.from_version, back.to_version, back.kind) == ("5", "1", "rollback")
    assert history.current(registry) == "1"
    kinds = [m.kind for m in history.history(registry)]
    assert kinds == ["promotion"] * 3 + ["rollback"] * 2 + ["manual", "rollback"]


def test_an_alias_moved_outside_ray_app_is_not_rolled_back_blindly(registry):
    _promote_all(registry)
    MlflowClient().set_registered_model_alias(registry.registered_model, "champion", "3")
    with pytest.raises(UserError, match="names v3 but its last recorded move went to v4"):
        history.rollback(registry)
    assert history.current(registry) == "3"  # left as it was


def test_the_cli_lists_sets_and_rolls_back(registry):
    _promote_all(registry)
    store = ["--tracking-uri", registry.tracking_uri]
    runner = CliRunner()
    moved = runner.invoke(app, ["alias-set", "5", "--reason", "canary won", *store, "--json"])
    assert moved.exit_code == 0, moved.output
    unknown = runner.invoke(app, ["alias-set", "9", "--reason", "typo", *store])
    assert isinstance(unknown.exception, UserError)  # `ray-app` prints it and exits 2
    assert "has no version '9'" in str(unknown.exception)
    back = runner.invoke(app, ["rollback", "--no-deploy", *store, "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.output.strip().splitlines()[-1])["move"]["to_version"] == "4"
    listed = runner.invoke(app, ["history", *store, "--json"])
    moves = json.loads(listed.output.strip().splitlines()[-1])["moves"]
    assert [(m["to_version"], m["kind"], m["reason"]) for m in moves[-2:]] == [
        ("5", "manual", "canary won"), ("4", "rollback", "rollback from v5 to v4")]  # fmt: skip


def test_a_champion_that_cannot_be_rescored_is_replaced_not_kept_and_no_crash(registry):
    """Regressions this catches: the champion kept when its bundle cannot be scored (the
    `except` branch returning 'not promoted'), the error re-raised (the training run dies after
    registering its model), or the champion's own logged loss used instead (0.35 would keep
    v2 against a 0.38 challenger)."""

    def loss_of(bundle: Path) -> float:
        if _loss(bundle) == 0.35:  # v2's bundle: written by an incompatible version
            raise UserError("bundle: preprocessor format 0 is not supported")
        return _loss(bundle)

    assert promote_if_better(registry, "1", 0.40, loss_of, 600).promoted
    assert promote_if_better(registry, "2", 0.35, loss_of, 600).promoted  # v1 re-scored: 0.40
    third = promote_if_better(registry, "3", 0.38, loss_of, 600)
    assert (third.promoted, third.champion_version, third.previous_champion_version) == (
        True, "3", "2")  # fmt: skip
    assert third.previous_champion_val_log_loss is None
    assert third.reason == ("champion v2 could not be re-scored (bundle: preprocessor format 0 "
                            "is not supported); replaced")  # fmt: skip
    assert history.current(registry) == "3"
    move = history.history(registry)[-1]
    assert (move.from_version, move.to_version, move.reason) == ("2", "3", third.reason)
    # A champion whose bundle is missing: a version registered from a run that logged none.
    client = MlflowClient()
    with mlflow.start_run(experiment_id=client.get_experiment_by_name("history-test")
                          .experiment_id) as run:  # fmt: skip
        mlflow.log_param("empty", 1)
    source = f"runs:/{run.info.run_id}/model"
    empty = client.create_model_version(registry.registered_model, source, run.info.run_id)
    history.move_alias(registry, str(empty.version), "manual", "a bad hand-pick")
    fourth = promote_if_better(registry, "4", 0.30, loss_of, 600)
    assert fourth.promoted and history.current(registry) == "4"
    assert fourth.reason.startswith(f"champion v{empty.version} could not be re-scored (")
    assert fourth.reason.endswith("); replaced")
    assert "cannot load model" in fourth.reason or "no artifacts/bundle" in fourth.reason
