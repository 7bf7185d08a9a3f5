"""End-to-end jobs: data -> Ray Train -> evaluation -> MLflow run and registry."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from ray_app import tracking
from ray_app.artifacts import Scorer, load_model, save_bundle
from ray_app.config import AppConfig
from ray_app.data import FEATURE_COLUMNS, LABEL_COLUMN, Splits, load_splits, summarise
from ray_app.errors import UserError
from ray_app.evaluate import evaluate_predictions, gbdt_reference, write_plots
from ray_app.features import Preprocessor
from ray_app.train import EncodedData, train_distributed

Progress = Callable[[str], None]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = value
    return out


def prepare_data(cfg: AppConfig) -> tuple[Splits, Preprocessor, EncodedData]:
    """Load and validate, fit preprocessing on the training split, encode train/validation."""
    splits = load_splits(cfg.data)
    pre = Preprocessor.fit(splits.train, cfg.features)
    return splits, pre, EncodedData.from_splits(splits, pre)


def _data_tags(splits: Splits) -> dict[str, str]:
    """Where the rows came from, as searchable run tags."""
    prov = splits.provenance
    tags = {
        "data.train_file": str(prov.get("train_file")),
        "data.layout": str(prov.get("train_layout", {}).get("layout")),
        "data.test_source": str(prov.get("test_source")),
        "data.rows": json.dumps(splits.sizes()),
    }
    renamed = prov.get("train_layout", {}).get("renamed")
    if renamed:
        tags["data.renamed_columns"] = json.dumps(renamed)
    if "test_overlap" in prov:
        tags["data.test_overlap_rows"] = str(prov["test_overlap"]["rows"])
    return tags


def run_name(kind: str) -> str:
    """Unique, sortable name shared by the MLflow run and the Ray storage folder."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"


def run_train_job(
    cfg: AppConfig,
    progress: Progress = lambda _: None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train on Ray, evaluate on the official test split, log and register in MLflow."""
    progress("loading and validating data")
    splits, pre, data = prepare_data(cfg)
    for note in splits.provenance.get("notes", []):
        progress(note)
    prov = splits.provenance
    layout = prov.get("train_layout", {}).get("layout")
    progress(f"data: {layout} layout, rows {splits.sizes()}, test: {prov.get('test_source')}")
    tracking.configure(cfg.tracking)
    name = run_name("train")

    # Any exception inside the block marks the MLflow run FAILED.
    with mlflow.start_run(run_name=name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = _flatten("", json.loads(cfg.model_dump_json(exclude={"tracking"})), {})
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_dict(summarise(splits), "data/summary.json")
        mlflow.set_tags(_data_tags(splits))
        mlflow.log_artifact(str(pre.save(work / "preprocessor.json")), "preprocessor")

        progress(f"training on {cfg.ray.num_workers} Ray Train worker(s)")
        outcome = train_distributed(cfg, data, pre.cardinalities, name)
        for row in outcome.meta["history"]:
            epoch = int(row["epoch"])
            skip = {"epoch", "epoch_end_unix"}
            mlflow.log_metrics({k: v for k, v in row.items() if k not in skip}, step=epoch)

        progress("evaluating on the official test split")
        bundle = save_bundle(work / "bundle", outcome.best_state, cfg.model, pre.cardinalities, pre)
        scorer = Scorer(pre, load_model(bundle))
        prob = scorer.predict_proba(splits.test)
        report = evaluate_predictions(splits.test, prob)
        gbdt = gbdt_reference(splits, pre, seed=cfg.train.seed)
        best = min(outcome.meta["history"], key=lambda r: r["val_log_loss"])
        summary_metrics = {
            **report["metrics"],
            **gbdt,
            "best_val_log_loss": best["val_log_loss"],
            "best_val_accuracy": best["val_accuracy"],
            "best_epoch": float(best["epoch"]),
            "epochs_run": float(outcome.meta["epoch"]),
            "train_wall_time_s": outcome.wall_time_s,
        }
        mlflow.log_metrics(summary_metrics)
        mlflow.log_dict({**report, "gbdt_reference": gbdt}, "evaluation/report.json")
        for path in write_plots(splits.test[LABEL_COLUMN].to_numpy(), prob, work / "plots"):
            mlflow.log_artifact(str(path), "evaluation")
        mlflow.log_artifacts(str(bundle), "bundle")

        progress("logging the model to MLflow")
        registered = cfg.tracking.registered_model if cfg.tracking.register_model else None
        info = tracking.log_pyfunc(bundle, tracking.input_example(splits.test), registered)
        version = info.registered_model_version
        champion: dict[str, Any] = {}
        if version is not None:
            champion = tracking.promote_if_better(cfg.tracking, str(version), scorer, splits.val)
            mlflow.log_dict(champion, "evaluation/promotion.json")
            if champion["previous_champion_val_log_loss"] is not None:
                mlflow.log_metric(
                    "champion_val_log_loss_same_split", champion["previous_champion_val_log_loss"]
                )

    return {
        **{k: round(v, 6) for k, v in report["metrics"].items()},
        **{k: round(v, 6) for k, v in gbdt.items()},
        "best_val_log_loss": round(best["val_log_loss"], 6),
        "best_epoch": int(best["epoch"]),
        "epochs_run": int(outcome.meta["epoch"]),
        "train_wall_time_s": round(outcome.wall_time_s, 3),
        "demographic_parity_difference": {
            k: round(v["demographic_parity_difference"], 4) for k, v in report["slices"].items()
        },
        "mlflow_run_id": run.info.run_id,
        "mlflow_tracking_uri": cfg.tracking.tracking_uri,
        "model_uri": info.model_uri,
        "registered_model": registered,
        "model_version": None if version is None else int(version),
        "champion": champion,
        "checkpoint": outcome.checkpoint_path,
    }


def run_evaluate_job(cfg: AppConfig, model_uri: str) -> dict[str, Any]:
    """Score the official test split with a logged/registered model (preprocessing included)."""
    tracking.configure(cfg.tracking)
    splits = load_splits(cfg.data)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise UserError(f"cannot load model {model_uri!r}: {exc.message}") from None
    prob = model.predict(splits.test[FEATURE_COLUMNS])["probability"].to_numpy()
    report = evaluate_predictions(splits.test, prob)
    return {
        "model_uri": model_uri,
        **{k: round(v, 6) for k, v in report["metrics"].items()},
        "slices": report["slices"],
    }
