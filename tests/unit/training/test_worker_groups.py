"""Each start of the loop's workers is recorded in the checkpoints' meta (where the ranks ran,
which epoch it resumed from); the train result reads its restarts from there."""

from __future__ import annotations

import shutil
from pathlib import Path

from ray_app.core.config import AppConfig, TrainConfig
from ray_app.ml.features import Preprocessor
from ray_app.training.contexts import LocalContext
from ray_app.training.jobs import _worker_groups
from ray_app.training.loop import LoopSpec, read_checkpoint, train_loop
from ray_app.training.rows import EncodedData


class Resuming(LocalContext):
    """A runner that hands the loop a checkpoint back, as Ray does after a restart."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(checkpoints=True)
        self.checkpoint = checkpoint

    def resume(self):
        return read_checkpoint(self.checkpoint)


def test_a_restart_is_recorded_with_the_epoch_it_resumed_from(small_splits, tmp_path):
    cfg = AppConfig()
    pre = Preprocessor.fit(small_splits.train, cfg.features)
    data = EncodedData.from_splits(small_splits, pre)
    saved = tmp_path / "latest"

    def keep(metrics, directory):
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(directory, saved)

    first = LocalContext(checkpoints=True, on_report=keep)
    train_loop(LoopSpec(cfg.model, TrainConfig(max_epochs=2, patience=99), pre.cardinalities),
               data, first)  # fmt: skip
    # The runner lost its workers after epoch 2; the new group runs epochs 3 and 4.
    again = train_loop(LoopSpec(cfg.model, TrainConfig(max_epochs=4, patience=99),
                                pre.cardinalities), data, Resuming(saved))  # fmt: skip
    groups = again.meta["worker_groups"]
    assert [g["resumed_from_epoch"] for g in groups] == [0, 2]
    assert [len(g["workers"]) for g in groups] == [1, 1]
    assert [int(r["epoch"]) for r in again.meta["history"]] == [1, 2, 3, 4]
    assert _worker_groups(again.meta) == {"worker_nodes": [None], "worker_group_restarts": 1,
                                          "resumed_from_epochs": [2]}  # fmt: skip


def test_a_run_without_restarts_reports_none():
    workers = [{"rank": 0, "node_id": "a"}, {"rank": 1, "node_id": "b"}]
    meta = {"worker_groups": [{"resumed_from_epoch": 0, "workers": workers}]}
    assert _worker_groups(meta) == {"worker_nodes": ["a", "b"], "worker_group_restarts": 0,
                                    "resumed_from_epochs": []}  # fmt: skip
