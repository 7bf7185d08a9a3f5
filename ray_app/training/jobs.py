"""End-to-end jobs: data -> Ray Train -> evaluation -> MLflow run and registry."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import log_loss

from ray_app.core.config import AppConfig, dump_config
from ray_app.core.errors import UserError
from ray_app.data.files import FEATURE_COLUMNS, LABEL_COLUMN, Splits, load_splits
from ray_app.data.raydata import (
    SplitDatasets,
    load_datasets,
    model_ready,
    score_dataset,
    summarise_datasets,
    train_stats,
)
from ray_app.ml.bundle import save_bundle
from ray_app.ml.drift import build_reference, save_reference
from ray_app.ml.features import Preprocessor
from ray_app.ml.metrics import (
    SLICE_COLUMNS,
    binary_metrics,
    evaluate_predictions,
    gbdt_reference,
    write_plots,
)
from ray_app.tracking import registry as tracking
from ray_app.training.loop import EncodedData, train_distributed, train_members

Progress = Callable[[str], None]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = value
    return out


def prepare_data(cfg: AppConfig) -> tuple[Splits, Preprocessor, EncodedData]:
    """In this process (Katib trials, the plain loop): load and validate, fit preprocessing on
    the training split, encode train/validation."""
    splits = load_splits(cfg.data)
    pre = Preprocessor.fit(splits.train, cfg.features)
    return splits, pre, EncodedData.from_splits(splits, pre)


def prepare_datasets(cfg: AppConfig) -> tuple[SplitDatasets, Preprocessor, dict[str, Any]]:
    """On Ray (train, tune): the same, with Ray Data; the driver never holds the rows. Returns
    the raw split Datasets (with the training split's value counts, `train_stats`), the
    preprocessor and the encoded, materialized train/val."""
    splits = load_datasets(cfg.data)
    splits.train_stats = train_stats(splits.train)
    pre = Preprocessor.fit_stats(splits.train_stats, cfg.features)
    return splits, pre, model_ready(splits, pre)


def _scored(dataset: Any, bundle: Path, version: str, members: int = 1) -> pd.DataFrame:
    """Probabilities of a bundle on a Dataset, with the label and slice columns only (and an
    ensemble's `members` own probabilities: probability_member_<i>)."""
    columns = [LABEL_COLUMN, *SLICE_COLUMNS, "probability"]
    columns += [f"probability_member_{i}" for i in range(members if members > 1 else 0)]
    scored = score_dataset(dataset, str(bundle), version, members=members > 1)
    return scored.select_columns(columns).to_pandas()


def _val_log_loss(splits: SplitDatasets) -> Callable[[Path], float]:
    def loss_of(bundle: Path) -> float:
        scored = _scored(splits.val, bundle, "val")
        return float(log_loss(scored[LABEL_COLUMN], scored["probability"], labels=[0, 1]))

    return loss_of


def _gbdt_on_ray(splits: SplitDatasets, pre: Preprocessor, seed: int) -> dict[str, float]:
    """The GBDT reference in a Ray task: the rows go there, not to the driver."""
    import ray

    @ray.remote(num_cpus=1)
    def run(train: Any, val: Any, test: Any) -> dict[str, float]:
        frames = Splits(train.to_pandas(), val.to_pandas(), test.to_pandas())
        return gbdt_reference(frames, pre, seed=seed)

    result: dict[str, float] = ray.get(run.remote(splits.train, splits.val, splits.test))
    return result


def _data_tags(splits: SplitDatasets) -> dict[str, str]:
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


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {key: round(v, 6) if isinstance(v, float) else v for key, v in values.items()}


def run_name(kind: str) -> str:
    """Unique, sortable name shared by the MLflow run and the Ray storage folder."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"


def run_train_job(
    cfg: AppConfig,
    progress: Progress = lambda _: None,
    tags: dict[str, str] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    member_callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Train on Ray, evaluate on the official test split, log and register in MLflow;
    `on_epoch` sees each epoch's metrics while training runs (the console's table);
    `member_callbacks`: Tune callbacks of an ensemble's member trials (the console's)."""
    progress("loading and validating data")
    splits, pre, data = prepare_datasets(cfg)
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
        mlflow.log_dict(summarise_datasets(splits), "data/summary.json")
        mlflow.log_text(dump_config(cfg), "config.yaml")  # rerun with --config config.yaml
        mlflow.set_tags(_data_tags(splits))
        mlflow.log_artifact(str(pre.save(work / "preprocessor.json")), "preprocessor")

        k = cfg.train.ensemble
        if k > 1:
            progress(f"training {k} ensemble members, {cfg.ray.cpus_per_worker} CPU each "
                     "(Ray Tune trials)")  # fmt: skip
            outcomes = train_members(cfg, data, pre.cardinalities, name, member_callbacks)
        else:
            progress(f"training on {cfg.ray.num_workers} Ray Train worker(s)")
            outcomes = [train_distributed(cfg, data, pre.cardinalities, name, on_epoch)]
        skip = {"epoch", "epoch_end_unix"}
        for i, outcome in enumerate(outcomes):  # an ensemble: member<i>.<metric>
            prefix = f"member{i}." if k > 1 else ""
            for row in outcome.meta["history"]:
                mlflow.log_metrics({f"{prefix}{key}": v for key, v in row.items()
                                    if key not in skip}, step=int(row["epoch"]))  # fmt: skip
        bests = [min(o.meta["history"], key=lambda r: r["val_log_loss"]) for o in outcomes]
        members = [{"seed": o.meta.get("seed", cfg.train.seed), "best_epoch": int(b["epoch"]),
                    "best_val_log_loss": b["val_log_loss"], "epochs_run": int(o.meta["epoch"])}
                   for o, b in zip(outcomes, bests, strict=True)]  # fmt: skip

        progress("evaluating on the test split")
        states = [o.best_state for o in outcomes]
        bundle = save_bundle(work / "bundle", states if k > 1 else states[0], cfg.model,
                             pre.cardinalities, pre, members if k > 1 else None)  # fmt: skip
        scored = _scored(splits.test, bundle, "candidate", k)
        prob = scored["probability"].to_numpy()
        report = evaluate_predictions(scored, prob)
        for i, member in enumerate(members if k > 1 else []):  # each member's own figures
            own = scored[f"probability_member_{i}"].to_numpy()
            member.update(binary_metrics(scored[LABEL_COLUMN].to_numpy(), own, prefix=""))
        # The drift reference (README "Monitoring and retraining"), in the bundle it describes.
        val_scored = _scored(splits.val, bundle, "val")  # also the challenger's loss below
        val_prob = val_scored["probability"].to_numpy()
        assert splits.train_stats is not None
        save_reference(build_reference(splits.train_stats, pre, val_prob, report["metrics"]),
                       bundle)  # fmt: skip
        gbdt = _gbdt_on_ray(splits, pre, seed=cfg.train.seed)
        val_loss = float(log_loss(val_scored[LABEL_COLUMN], val_prob, labels=[0, 1]))
        best = bests[0]
        summary_metrics = {
            **report["metrics"],
            **gbdt,
            # An ensemble's own validation loss (its members' are in `members`).
            "best_val_log_loss": val_loss if k > 1 else best["val_log_loss"],
            "best_val_accuracy": best["val_accuracy"],
            "best_epoch": float(best["epoch"]),
            "epochs_run": float(sum(m["epochs_run"] for m in members)),
            "train_wall_time_s": outcomes[0].wall_time_s,
            "ensemble_members": float(k),
        }
        if k > 1:
            summary_metrics.pop("best_val_accuracy")
            summary_metrics.pop("best_epoch")
            for i, member in enumerate(members):
                mlflow.log_metrics({f"member{i}.test_{key}": member[key] for key in
                                    ("accuracy", "log_loss", "roc_auc")})  # fmt: skip
        mlflow.log_metrics(summary_metrics)
        evaluation = {**report, "gbdt_reference": gbdt}
        if k > 1:
            evaluation["members"] = members
        mlflow.log_dict(evaluation, "evaluation/report.json")
        for path in write_plots(scored[LABEL_COLUMN].to_numpy(), prob, work / "plots"):
            mlflow.log_artifact(str(path), "evaluation")
        mlflow.log_artifacts(str(bundle), "bundle")

        progress("logging the model to MLflow")
        registered = cfg.tracking.registered_model if cfg.tracking.register_model else None
        example = tracking.input_example(splits.test.limit(50).to_pandas())
        info = tracking.log_pyfunc(bundle, example, registered)
        version = info.registered_model_version
        champion: dict[str, Any] = {}
        if version is not None:
            loss_of = _val_log_loss(splits)
            champion = tracking.promote_if_better(
                cfg.tracking,
                str(version),
                val_loss,
                loss_of,
                splits.sizes()["val"],
            )
            mlflow.log_dict(champion, "evaluation/promotion.json")
            if champion["previous_champion_val_log_loss"] is not None:
                mlflow.log_metric(
                    "champion_val_log_loss_same_split", champion["previous_champion_val_log_loss"]
                )

    return {
        **{k: round(v, 6) for k, v in report["metrics"].items()},
        **{k: round(v, 6) for k, v in gbdt.items()},
        "best_val_log_loss": round(summary_metrics["best_val_log_loss"], 6),
        "best_epoch": int(best["epoch"]),
        "epochs_run": int(summary_metrics["epochs_run"]),
        "train_wall_time_s": round(outcomes[0].wall_time_s, 3),
        "ensemble_members": k,
        **({"members": [_rounded(m) for m in members]} if k > 1 else {}),
        "demographic_parity_difference": {
            k: round(v["demographic_parity_difference"], 4) for k, v in report["slices"].items()
        },
        "mlflow_run_id": run.info.run_id,
        "mlflow_tracking_uri": cfg.tracking.tracking_uri,
        "model_uri": info.model_uri,
        "registered_model": registered,
        "model_version": None if version is None else int(version),
        "champion": champion,
        "checkpoint": outcomes[0].checkpoint_path,
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
