"""Fault injection for the resume tests: epoch hooks (RAY_APP_EPOCH_HOOK=tests.support.faults:
<name>) that hard-exit a training process once, as if its node were lost.

The production loop only calls the hook it is given (`ray_app.training.loop.EpochEvent`); the
`os._exit` lives here. A marker file in the run folder makes each crash happen once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ray_app.training.loop import EpochEvent

MARKER = "fault_injected.txt"


def _wait_for_committed_checkpoint(run_dir: Path, epoch: int, timeout_s: float = 60) -> None:
    """Crash only once Ray Train's controller has committed the checkpoint of `epoch` (it lists
    it in checkpoint_manager_snapshot.json). An epoch lasts ~60 ms on test data, less than the
    controller's poll: crashing earlier loses that report, which is Ray's documented
    behaviour, not the resume this injection exists to exercise."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while epoch > 0 and time.monotonic() < deadline:
        try:
            results = json.loads(snapshot.read_text()).get("checkpoint_results", [])
            if any(r.get("metrics", {}).get("epoch") == epoch for r in results):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)


def _crash_once(event: EpochEvent, wait_for_commit: bool) -> None:
    assert event.run_dir is not None
    marker = Path(event.run_dir) / MARKER
    if marker.exists():
        return
    if wait_for_commit:
        _wait_for_committed_checkpoint(marker.parent, event.epoch - 1)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"worker {event.rank} (seed {event.seed}) killed itself at epoch "
                      f"{event.epoch}\n")  # fmt: skip
    os._exit(1)  # a hard crash: no cleanup, no report


def last_worker_at_epoch_1(event: EpochEvent) -> None:
    """Ray Train: the last rank dies in epoch 1 (nothing committed yet)."""
    if event.epoch == 1 and event.rank == event.world_size - 1:
        _crash_once(event, wait_for_commit=False)


def last_worker_at_epoch_2(event: EpochEvent) -> None:
    """Ray Train: the last rank dies in epoch 2, once epoch 1's checkpoint is committed."""
    if event.epoch == 2 and event.rank == event.world_size - 1:
        _crash_once(event, wait_for_commit=True)


def member_seed_1_at_epoch_3(event: EpochEvent) -> None:
    """An ensemble member (a Tune trial, seed 1) dies in epoch 3. Tune's report has persisted
    the previous epoch's checkpoint when the loop goes on: no commit to wait for."""
    if event.epoch == 3 and event.seed == 1:
        _crash_once(event, wait_for_commit=False)


NODE_LOST = "node_lost.txt"


def park_in_epoch_3(event: EpochEvent) -> None:
    """Multi-node: every rank stops in epoch 3, once epoch 2's checkpoint is committed, and
    says so (parked-<rank>.txt), until the test has killed a node and written node_lost.txt.
    The restarted group finds that file and goes on: it parks no more."""
    assert event.run_dir is not None
    run_dir = Path(event.run_dir)
    if event.epoch != 3 or (run_dir / NODE_LOST).exists():
        return
    _wait_for_committed_checkpoint(run_dir, 2)
    (run_dir / f"parked-{event.rank}.txt").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not (run_dir / NODE_LOST).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# Multi-node Tune: a folder every node sees (tests/support/cluster.py sets it on each node).
FAULT_DIR_ENV = "RAY_APP_TEST_FAULT_DIR"


def park_trials_in_epoch_3(event: EpochEvent) -> None:
    """Multi-node Tune: every trial stops in epoch 3 (its epoch-2 checkpoint is persisted: a
    trial's report returns after it), says so (parked-<pid>.txt in the fault folder), and waits
    until the test has killed a node (node_lost.txt there). Restarted trials park no more."""
    folder = Path(os.environ[FAULT_DIR_ENV])
    if event.epoch != 3 or (folder / NODE_LOST).exists():
        return
    (folder / f"parked-{os.getpid()}.txt").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not (folder / NODE_LOST).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
