"""The `--json` results are typed: their JSON schemas are committed (docs/schemas/) and
current, and a result serialises with the keys its readers (pipeline, monitor) rely on."""

from __future__ import annotations

import json

from ray_app.training.results import TrainResult, json_schemas
from tests.support.procs import REPO

SCHEMAS = REPO / "docs" / "schemas"


def test_committed_json_schemas_are_current():
    for name, text in json_schemas().items():
        assert (SCHEMAS / name).read_text() == text, f"run: ray-app config schemas ({name})"


def test_a_train_result_names_every_key_and_leaves_members_out_for_one_model():
    schema = json.loads((SCHEMAS / "train-result.schema.json").read_text())
    required = set(schema["required"])
    # The keys the pipeline's steps and the monitor's retrain read.
    assert {"model_version", "champion", "mlflow_run_id", "test_log_loss"} <= required
    assert "members" not in required
    fields = {name: 0.5 for name in TrainResult.model_fields if name.startswith(("test_", "gbdt_"))}
    result = TrainResult(**fields, best_val_log_loss=0.3, best_epoch=2, epochs_run=3,
                         train_wall_time_s=1.0, ensemble_members=1, members=None,
                         demographic_parity_difference={"sex": 0.1}, mlflow_run_id="r",
                         mlflow_tracking_uri="sqlite:///m.db", model_uri="models:/m/1",
                         registered_model="m", model_version=1, champion=None,
                         checkpoint="/tmp/c")  # fmt: skip
    out = result.to_json()
    assert "members" not in out and out["champion"] is None and out["model_version"] == 1
    assert set(out) == set(TrainResult.model_fields) - {"members"}
