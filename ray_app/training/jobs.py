"""The training job: data -> Ray Train (or an ensemble of Tune trials) -> evaluation -> MLflow
run, registered version and the champion rule. Also the evaluation of a registered model.

    run_train_job(cfg)      # what `ray-app train`, the train RayJob and the pipeline run
    run_evaluate_job(cfg)   # `ray-app evaluate` and the pipeline's evaluate step
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow

from ray_app.core.config import AppConfig, dump_config
from ray_app.core.redact import redact
from ray_app.core.runtime import check_shared_storage
from ray_app.core.schema import FEATURE_COLUMNS
from ray_app.data.raydata import SplitDatasets, load_datasets, train_stats
from ray_app.data.splits import load_splits, summarise
from ray_app.ml.bundle import save_bundle
from ray_app.ml.features import Preprocessor
from ray_app.ml.metrics import evaluate_predictions
from ray_app.ml.plots import write_plots
from ray_app.ml.scoring import Scorer, model_ready
from ray_app.tracking import registry, store
from ray_app.tracking.registry import Promotion
from ray_app.training.distributed import TrainOutcome, train_distributed
from ray_app.training.ensemble import train_members
from ray_app.training.evaluation import CandidateEvaluation, evaluate_candidate, split_log_loss
from ray_app.training.results import EvaluateResult, MemberResult, TrainResult

Progress = Callable[[str], None]


@dataclass
class Prepared:
    """The splits as Ray Datasets, the preprocessor fitted on train, encoded train/val."""

    splits: SplitDatasets
    pre: Preprocessor
    encoded: dict[str, Any]
    # On several nodes: the encoded blocks, pinned on the driver's node (see keep_blocks_here).
    pinned: list[Any] = field(default_factory=list)


def prepare_datasets(cfg: AppConfig) -> Prepared:
    """On Ray (train, tune): the same, with Ray Data; the driver never holds the rows. The
    training split's value counts (`train_stats`) fit the preprocessor and, later, the drift
    reference."""
    splits = load_datasets(cfg.data)
    splits.train_stats = train_stats(splits.train)
    pre = Preprocessor.fit_stats(splits.train_stats, cfg.features)
    encoded = model_ready(splits, pre)
    # The raw splits too: the evaluation scores test and validation after training, and
    # re-making their blocks would need CPUs its scoring actor and the GBDT task hold.
    raw = {"train_rows": splits.train, "val_rows": splits.val, "test_rows": splits.test}
    return Prepared(splits, pre, encoded, keep_blocks_here({**encoded, **raw}))


def keep_blocks_here(datasets: dict[str, Any]) -> list[Any]:
    """On a cluster of several nodes, a copy of every block of `datasets` on the driver's
    node, pinned while the job runs; on one node, nothing.

    The splits and their encoded form are computed once, before training, by tasks on the
    worker nodes, and their blocks live in those nodes' object stores. When a node dies its
    blocks go with it; Ray then recovers each from another copy if one exists, else by
    re-running the tasks that made it. Re-running needs CPUs, and whoever waits for the blocks
    may hold them: the restarted worker group (2 workers on 2 one-CPU nodes) hung for ever,
    and so did the evaluation after a loss (its scoring actor and the GBDT task hold 2 CPUs).
    A copy on the driver's node (the head on a cluster, which has an object store even with
    no CPUs) lets Ray recover without running anything. The copy is in the object store, not
    the driver's heap (Arrow blocks are read zero-copy): it costs the head's object store the
    size of the splits and their encoding.
    """
    import ray

    if len({n["NodeID"] for n in ray.nodes() if n.get("Alive")}) < 2:
        return []
    refs = [ref for ds in datasets.values() for bundle in ds.iter_internal_ref_bundles()
            for ref in bundle.block_refs]  # fmt: skip
    return list(ray.get(refs))


def run_name(kind: str) -> str:
    """Unique, sortable name shared by the MLflow run and the Ray storage folder."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = value
    return out


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


def _log_inputs(cfg: AppConfig, prepared: Prepared, work: Path) -> None:
    """Params, the whole config (rerun with --config config.yaml), the data's provenance, the
    preprocessor."""
    params = _flatten(
        "",
        json.loads(
            cfg.model_dump_json(include={"data", "features", "model", "train", "ray", "search"})
        ),
        {},
    )
    # Credentials in a URI (the tracking URI, a Ray address) stay out of the run.
    mlflow.log_params({k: redact(str(v)) for k, v in params.items()})
    mlflow.log_dict(summarise(prepared.splits), "data/summary.json")
    mlflow.log_text(redact(dump_config(cfg)), "config.yaml")
    mlflow.set_tags(_data_tags(prepared.splits))
    mlflow.log_artifact(str(prepared.pre.save(work / "preprocessor.json")), "preprocessor")


def _fit(cfg: AppConfig, prepared: Prepared, name: str, progress: Progress,
         on_epoch: Callable[[dict], None] | None, member_callbacks: list[Any] | None,
         ) -> list[TrainOutcome]:  # fmt: skip
    cardinalities = prepared.pre.cardinalities
    if cfg.train.ensemble > 1:
        progress(f"training {cfg.train.ensemble} ensemble members, {cfg.ray.cpus_per_worker} "
                 "CPU each (Ray Tune trials)")  # fmt: skip
        return train_members(cfg, prepared.encoded, cardinalities, name, member_callbacks)
    progress(f"training on {cfg.ray.num_workers} Ray Train worker(s)")
    return [train_distributed(cfg, prepared.encoded, cardinalities, name, on_epoch)]


def _log_histories(outcomes: list[TrainOutcome], seed: int) -> list[dict[str, Any]]:
    """Per-epoch metrics (an ensemble's as member<i>.<metric>); each member's summary."""
    skip = {"epoch", "epoch_end_unix"}
    ensemble = len(outcomes) > 1
    members = []
    for i, outcome in enumerate(outcomes):
        prefix = f"member{i}." if ensemble else ""
        for row in outcome.meta["history"]:
            mlflow.log_metrics({f"{prefix}{key}": v for key, v in row.items() if key not in skip},
                               step=int(row["epoch"]))  # fmt: skip
        best = min(outcome.meta["history"], key=lambda r: r["val_log_loss"])
        members.append({"seed": outcome.meta.get("seed", seed), "best_epoch": int(best["epoch"]),
                        "best_val_log_loss": best["val_log_loss"],
                        "best_val_accuracy": best["val_accuracy"],
                        "epochs_run": int(outcome.meta["epoch"])})  # fmt: skip
    return members


def _log_evaluation(ev: CandidateEvaluation, members: list[dict[str, Any]],
                    outcomes: list[TrainOutcome], work: Path) -> dict[str, float]:  # fmt: skip
    """The candidate's figures as run metrics, report.json and plots; returns the metrics."""
    k = len(outcomes)
    figures: dict[str, float] = {
        **ev.report["metrics"], **ev.gbdt,
        # An ensemble's own validation loss (its members' are in `members`).
        "best_val_log_loss": ev.val_log_loss if k > 1 else members[0]["best_val_log_loss"],
        "epochs_run": float(sum(m["epochs_run"] for m in members)),
        "train_wall_time_s": outcomes[0].wall_time_s,
        "ensemble_members": float(k),
    }  # fmt: skip
    if k == 1:
        figures.update(best_val_accuracy=members[0]["best_val_accuracy"],
                       best_epoch=float(members[0]["best_epoch"]))  # fmt: skip
    for i, member in enumerate(members if k > 1 else []):
        mlflow.log_metrics({f"member{i}.test_{key}": member[key]
                            for key in ("accuracy", "log_loss", "roc_auc")})  # fmt: skip
    mlflow.log_metrics(figures)
    evaluation = {**ev.report, "gbdt_reference": ev.gbdt}
    if k > 1:
        evaluation["members"] = [_public_member(m) for m in members]
    mlflow.log_dict(evaluation, "evaluation/report.json")
    for path in write_plots(ev.labels, ev.probability, work / "plots"):
        mlflow.log_artifact(str(path), "evaluation")
    return figures


def _public_member(member: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in member.items() if k != "best_val_accuracy"}


def _register(cfg: AppConfig, bundle: Path, val_loss: float, prepared: Prepared,
              ) -> tuple[Any, Promotion | None]:  # fmt: skip
    """Log the model (and register a version); the champion rule decides the alias."""
    name = cfg.tracking.registered_model if cfg.tracking.register_model else None
    info = store.log_pyfunc(bundle, name)
    version = info.registered_model_version
    if version is None:
        return info, None
    promotion = registry.promote_if_better(cfg.tracking, str(version), val_loss,
                                           split_log_loss(prepared.splits.val),
                                           prepared.splits.sizes()["val"])  # fmt: skip
    mlflow.log_dict(promotion.model_dump(), "evaluation/promotion.json")
    if promotion.previous_champion_val_log_loss is not None:
        mlflow.log_metric("champion_val_log_loss_same_split",
                          promotion.previous_champion_val_log_loss)  # fmt: skip
    return info, promotion


def run_train_job(
    cfg: AppConfig,
    progress: Progress = lambda _: None,
    tags: dict[str, str] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    member_callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train on Ray, evaluate on the test split, log and register in MLflow.

    Args:
        cfg: the config tree.
        progress: told what the job is doing (the console's status line).
        tags: MLflow run tags (a tune search's parent run).
        on_epoch: sees each epoch's metrics while training runs (the console's lines).
        member_callbacks: Tune callbacks of an ensemble's member trials (the console's).

    Returns:
        The result (`--json`), with the registered version and the champion rule's decision.
    """
    check_shared_storage(cfg.ray.storage_path)
    progress("loading and validating data")
    prepared = prepare_datasets(cfg)
    prov = prepared.splits.provenance
    for note in prov.get("notes", []):
        progress(note)
    progress(f"data: {prov.get('train_layout', {}).get('layout')} layout, rows "
             f"{prepared.splits.sizes()}, test: {prov.get('test_source')}")  # fmt: skip
    store.configure(cfg.tracking)
    name = run_name("train")
    # Any exception inside the block marks the MLflow run FAILED.
    with mlflow.start_run(run_name=name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _log_inputs(cfg, prepared, work)
        outcomes = _fit(cfg, prepared, name, progress, on_epoch, member_callbacks)
        members = _log_histories(outcomes, cfg.train.seed)
        progress("evaluating on the test split")
        k = len(outcomes)
        states = [o.best_state for o in outcomes]
        bundle = save_bundle(work / "bundle", states if k > 1 else states[0], cfg.model,
                             prepared.pre.cardinalities, prepared.pre,
                             [_public_member(m) for m in members] if k > 1 else None)  # fmt: skip
        ev = evaluate_candidate(prepared.splits, prepared.pre, bundle, members if k > 1 else [],
                                cfg.train.seed)  # fmt: skip
        figures = _log_evaluation(ev, members, outcomes, work)
        mlflow.log_artifacts(str(bundle), "bundle")
        progress("logging the model to MLflow")
        info, promotion = _register(cfg, bundle, ev.val_log_loss, prepared)
    return _train_result(cfg, run.info.run_id, info, promotion, ev, figures, members, outcomes)


def _round(value: float) -> float:
    return round(float(value), 6)


def _train_result(
    cfg: AppConfig,
    run_id: str,
    info: Any,
    promotion: Promotion | None,
    ev: CandidateEvaluation,
    figures: dict[str, float],
    members: list[dict[str, Any]],
    outcomes: list[TrainOutcome],
) -> TrainResult:
    version = info.registered_model_version
    k = len(outcomes)
    own = [MemberResult(**{key: _round(v) if isinstance(v, float) else v
                           for key, v in _public_member(m).items()})
           for m in members] if k > 1 else None  # fmt: skip
    return TrainResult(
        **{key: _round(v) for key, v in {**ev.report["metrics"], **ev.gbdt}.items()},
        best_val_log_loss=_round(figures["best_val_log_loss"]),
        best_epoch=members[0]["best_epoch"],
        epochs_run=int(figures["epochs_run"]),
        train_wall_time_s=round(outcomes[0].wall_time_s, 3),
        ensemble_members=k,
        members=own,
        demographic_parity_difference={
            key: round(v["demographic_parity_difference"], 4)
            for key, v in ev.report["slices"].items()
        },
        mlflow_run_id=run_id,
        mlflow_tracking_uri=redact(cfg.tracking.tracking_uri),  # printed, in the job's log
        model_uri=info.model_uri,
        registered_model=cfg.tracking.registered_model if cfg.tracking.register_model else None,
        model_version=None if version is None else int(version),
        champion=promotion,
        checkpoint=outcomes[0].checkpoint_path,
        **_worker_groups(outcomes[0].meta),
    )


def _worker_groups(meta: dict[str, Any]) -> dict[str, Any]:
    """Where the last worker group ran, and the restarts before it (the loop's meta)."""
    groups = meta.get("worker_groups") or [{"resumed_from_epoch": 0, "workers": []}]
    return {
        "worker_nodes": [w.get("node_id") for w in groups[-1]["workers"]],
        "worker_group_restarts": len(groups) - 1,
        "resumed_from_epochs": [int(g["resumed_from_epoch"]) for g in groups[1:]],
    }


def run_evaluate_job(cfg: AppConfig, model_uri: str) -> EvaluateResult:
    """Score the test split (adult.test by default; the data options choose another) with a
    logged or registered model, loaded as its bundle (weights + JSON: no code from the
    registry runs here)."""
    store.configure(cfg.tracking)
    splits = load_splits(cfg.data)
    uri, _ = registry.pin(model_uri, None)
    with registry.registry_bundle(uri) as bundle:
        scorer = Scorer.from_bundle(bundle)
    prob = scorer.predict_proba(splits.test[FEATURE_COLUMNS])
    report = evaluate_predictions(splits.test, prob)
    return EvaluateResult(model_uri=model_uri,
                          **{k: _round(v) for k, v in report["metrics"].items()},
                          slices=report["slices"])  # fmt: skip
