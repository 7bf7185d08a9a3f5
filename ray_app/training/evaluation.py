"""A trained candidate on its splits: test figures (its members' too), the validation scores
the drift reference and the champion rule use, and the gradient-boosting reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from ray_app.core.schema import LABEL_COLUMN
from ray_app.data.raydata import SplitDatasets
from ray_app.data.splits import Splits
from ray_app.ml.drift import build_reference, save_reference
from ray_app.ml.features import Preprocessor
from ray_app.ml.metrics import SLICE_COLUMNS, binary_metrics, evaluate_predictions, gbdt_reference
from ray_app.ml.scoring import score_dataset


def scored(dataset: Any, bundle: Path, version: str, members: int = 1) -> pd.DataFrame:
    """Probabilities of a bundle on a Dataset (the one scorer, in Ray Data actors), with the
    label and slice columns only (and an ensemble's members' own: probability_member_<i>)."""
    columns = [LABEL_COLUMN, *SLICE_COLUMNS, "probability"]
    columns += [f"probability_member_{i}" for i in range(members if members > 1 else 0)]
    frame = score_dataset(dataset, str(bundle), version, members=members > 1)
    return frame.select_columns(columns).to_pandas()


def split_log_loss(dataset: Any) -> Callable[[Path], float]:
    """bundle -> its log loss on `dataset` (the champion rule re-scores the champion so)."""

    def loss_of(bundle: Path) -> float:
        frame = scored(dataset, bundle, "val")
        return float(log_loss(frame[LABEL_COLUMN], frame["probability"], labels=[0, 1]))

    return loss_of


def gbdt_on_ray(splits: SplitDatasets, pre: Preprocessor, seed: int) -> dict[str, float]:
    """The GBDT reference in a Ray task: the rows go there, not to the driver."""
    import ray

    @ray.remote(num_cpus=1)
    def run(train: Any, val: Any, test: Any) -> dict[str, float]:
        frames = Splits(train.to_pandas(), val.to_pandas(), test.to_pandas())
        return gbdt_reference(frames, pre, seed=seed)

    result: dict[str, float] = ray.get(run.remote(splits.train, splits.val, splits.test))
    return result


@dataclass
class CandidateEvaluation:
    report: dict[str, Any]  # test metrics and fairness slices
    labels: np.ndarray  # test labels
    probability: np.ndarray  # test probabilities
    val_log_loss: float  # the candidate's own, on the validation split (the champion rule's)
    gbdt: dict[str, float]


def evaluate_candidate(
    splits: SplitDatasets,
    pre: Preprocessor,
    bundle: Path,
    members: list[dict[str, Any]],
    seed: int,
) -> CandidateEvaluation:
    """Score the candidate's test and validation splits once each; each member's own test
    figures go into `members`; the drift reference is saved into the bundle it describes."""
    k = max(1, len(members))
    test = scored(splits.test, bundle, "candidate", k)
    prob = test["probability"].to_numpy()
    report = evaluate_predictions(test, prob)
    for i, member in enumerate(members if k > 1 else []):
        own = test[f"probability_member_{i}"].to_numpy()
        member.update(binary_metrics(test[LABEL_COLUMN].to_numpy(), own, prefix=""))
    val = scored(splits.val, bundle, "val")
    val_prob = val["probability"].to_numpy()
    assert splits.train_stats is not None
    save_reference(build_reference(splits.train_stats, pre, val_prob, report["metrics"]), bundle)
    return CandidateEvaluation(
        report=report,
        labels=test[LABEL_COLUMN].to_numpy(),
        probability=prob,
        val_log_loss=float(log_loss(val[LABEL_COLUMN], val_prob, labels=[0, 1])),
        gbdt=gbdt_on_ray(splits, pre, seed),
    )
