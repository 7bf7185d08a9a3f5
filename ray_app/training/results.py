"""Typed results of `ray-app train`, `tune` and `evaluate`: their `--json` output is the contract
read by the pipeline's steps, the monitor's retrain, the benchmarks and users' scripts.

The JSON schemas of these models are committed under docs/schemas/ (`ray-app config schemas`
writes them; a test checks they are current).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ray_app.tracking.registry import Promotion


class _Result(BaseModel):
    """A result: JSON as `--json` prints it (fields listed in `_omit_if_none` are left out
    when None, as the dicts these models replaced did)."""

    model_config = ConfigDict(extra="forbid")
    _omit_if_none: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        for key in self._omit_if_none:
            if out.get(key) is None:
                out.pop(key, None)
        return out


class MemberResult(BaseModel):
    """One member of a deep ensemble: its seed, early-stopping figures and own test metrics."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    best_epoch: int
    best_val_log_loss: float
    epochs_run: int
    accuracy: float
    f1: float
    macro_f1: float
    log_loss: float
    roc_auc: float
    brier: float


class TrainResult(_Result):
    """`ray-app train --json` (also a RayJob's and the pipeline's train step's result)."""

    _omit_if_none = ("members",)

    test_accuracy: float
    test_f1: float
    test_macro_f1: float
    test_log_loss: float
    test_roc_auc: float
    test_brier: float
    gbdt_test_accuracy: float
    gbdt_test_f1: float
    gbdt_test_macro_f1: float
    gbdt_test_log_loss: float
    gbdt_test_roc_auc: float
    gbdt_test_brier: float
    best_val_log_loss: float = Field(description="an ensemble's own, else the best epoch's")
    best_epoch: int = Field(description="an ensemble: member 0's")
    epochs_run: int = Field(description="an ensemble: summed over its members")
    train_wall_time_s: float
    ensemble_members: int
    members: list[MemberResult] | None = Field(None, description="only for an ensemble")
    demographic_parity_difference: dict[str, float]
    mlflow_run_id: str
    mlflow_tracking_uri: str
    model_uri: str
    registered_model: str | None = Field(description="None: --no-register")
    model_version: int | None
    champion: Promotion | None = Field(description="None when no version was registered")
    checkpoint: str
    worker_nodes: list[str | None] = Field(
        default_factory=list,
        description="the Ray node id of each rank of the last worker group (an ensemble: "
        "member 0's trial)",
    )
    worker_group_restarts: int = Field(
        0,
        description="worker groups started again after a lost worker or node (an "
        "ensemble: member 0's); one lost again before its first checkpoint is not counted",
    )
    resumed_from_epochs: list[int] = Field(
        default_factory=list,
        description="for each restart, the epoch of the checkpoint it resumed from",
    )


class TuneResult(_Result):
    """`ray-app tune --json`; with the retrain (default) also the retrained model's figures."""

    _omit_if_none = ("retrained", "test_accuracy", "test_log_loss", "test_roc_auc", "test_f1",
                     "mlflow_run_id", "model_version")  # fmt: skip

    search: str
    trials: int
    epochs_consumed: int
    full_budget_epochs: int
    stopped_early: int
    errored: int
    best_val_log_loss: float
    best_config: dict[str, Any]
    concurrent_trials: int
    search_wall_s: float
    mlflow_parent_run_id: str
    retrained: TrainResult | None = None
    test_accuracy: float | None = None
    test_log_loss: float | None = None
    test_roc_auc: float | None = None
    test_f1: float | None = None
    mlflow_run_id: str | None = None
    model_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.retrained is not None:
            out["retrained"] = self.retrained.to_json()
        return out


class EvaluateResult(_Result):
    """`ray-app evaluate --json`: a model's figures on a test split, with fairness slices."""

    model_uri: str
    test_accuracy: float
    test_f1: float
    test_macro_f1: float
    test_log_loss: float
    test_roc_auc: float
    test_brier: float
    slices: dict[str, Any]


RESULTS: dict[str, type[BaseModel]] = {
    "train-result": TrainResult,
    "tune-result": TuneResult,
    "evaluate-result": EvaluateResult,
}


def json_schemas() -> dict[str, str]:
    """File name -> JSON schema text of each result (docs/schemas/<name>.schema.json)."""
    return {f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=1) + "\n"
            for name, model in RESULTS.items()}  # fmt: skip


def write_json_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in json_schemas().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written
