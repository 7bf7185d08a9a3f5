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
from ray_app.ml.scoring import score_dataset, spread

SPLIT_COLUMN = "_split"  # which Dataset a scored row came from (scored_splits)


def scored(dataset: Any, bundle: Path, version: str, members: int = 1) -> pd.DataFrame:
    """Probabilities of a bundle on a Dataset (the one scorer, in Ray Data actors), with the
    label and slice columns only (and an ensemble's members' own: probability_member_<i>)."""
    return scored_splits({version: dataset}, bundle, members)[version]


def scored_splits(datasets: dict[str, Any], bundle: Path, members: int = 1,
                  ) -> dict[str, pd.DataFrame]:  # fmt: skip
    """`scored` of several Datasets in one Ray Data pass: one scoring actor (a process that
    loads torch and the bundle, ~3 s here) instead of one per split. Rows come back in no
    particular order; each frame holds its own split's rows, labels beside probabilities."""
    import pyarrow as pa

    def tagger(name: str) -> Any:
        def tag(batch: Any) -> Any:
            return batch.append_column(SPLIT_COLUMN, pa.array([name] * batch.num_rows))

        return tag

    tagged = [ds.map_batches(tagger(name), batch_format="pyarrow")
              for name, ds in datasets.items()]  # fmt: skip
    union = tagged[0].union(*tagged[1:]) if len(tagged) > 1 else tagged[0]
    columns = [LABEL_COLUMN, *SLICE_COLUMNS, "probability", SPLIT_COLUMN]
    columns += [f"probability_member_{i}" for i in range(members if members > 1 else 0)]
    frame = score_dataset(union, str(bundle), "evaluation", members=members > 1)
    frame = frame.select_columns(columns).to_pandas()
    return {name: frame[frame[SPLIT_COLUMN] == name].drop(columns=SPLIT_COLUMN)
            .reset_index(drop=True) for name in datasets}  # fmt: skip


def split_log_loss(dataset: Any) -> Callable[[Path], float]:
    """bundle -> its log loss on `dataset` (the champion rule re-scores the champion so)."""

    def loss_of(bundle: Path) -> float:
        frame = scored(dataset, bundle, "val")
        return float(log_loss(frame[LABEL_COLUMN], frame["probability"], labels=[0, 1]))

    return loss_of


def gbdt_on_ray(splits: SplitDatasets, pre: Preprocessor, seed: int) -> Any:
    """The GBDT reference in a Ray task: the rows go there, not to the driver. Returns its
    ObjectRef (a dict of figures): it runs beside the scoring of the splits."""
    import ray

    @ray.remote(num_cpus=1)
    def run(train: Any, val: Any, test: Any) -> dict[str, float]:
        frames = Splits(train.to_pandas(), val.to_pandas(), test.to_pandas())
        return gbdt_reference(frames, pre, seed=seed)

    return run.remote(splits.train, splits.val, splits.test)


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
    """Score the candidate's test and validation splits (one pass); each member's own test
    figures go into `members`; the drift reference is saved into the bundle it describes."""
    import ray

    gbdt = gbdt_on_ray(splits, pre, seed)
    k = max(1, len(members))
    frames = scored_splits({"test": splits.test, "val": splits.val}, bundle, k)
    figures = scored_figures(frames["test"], frames["val"], members)
    assert splits.train_stats is not None
    save_reference(build_reference(splits.train_stats, pre, figures.val_probability,
                                   figures.report["metrics"], figures.val_spread),
                   bundle)  # fmt: skip
    return CandidateEvaluation(
        report=figures.report,
        labels=figures.labels,
        probability=figures.probability,
        val_log_loss=figures.val_log_loss,
        gbdt=ray.get(gbdt),
    )


@dataclass
class ScoredFigures:
    report: dict[str, Any]
    labels: np.ndarray
    probability: np.ndarray
    val_probability: np.ndarray
    val_spread: np.ndarray | None
    val_log_loss: float


def scored_figures(test: pd.DataFrame, val: pd.DataFrame, members: list[dict[str, Any]],
                   ) -> ScoredFigures:  # fmt: skip
    """The candidate's figures from its scored test and validation rows (`scored_splits`):
    test metrics; each member's own test figures into `members` (an ensemble's); the
    validation loss the champion rule compares, of the candidate's OWN `probability` (an
    ensemble's average, not any member's)."""
    k = max(1, len(members))
    prob = test["probability"].to_numpy()
    report = evaluate_predictions(test, prob)
    for i, member in enumerate(members if k > 1 else []):
        own = test[f"probability_member_{i}"].to_numpy()
        member.update(binary_metrics(test[LABEL_COLUMN].to_numpy(), own, prefix=""))
    val_prob = val["probability"].to_numpy()
    val_spread = None
    if k > 1:
        val_spread = spread(np.stack([val[f"probability_member_{i}"].to_numpy()
                                      for i in range(k)]))  # fmt: skip
    return ScoredFigures(
        report=report,
        labels=test[LABEL_COLUMN].to_numpy(),
        probability=prob,
        val_probability=val_prob,
        val_spread=val_spread,
        val_log_loss=float(log_loss(val[LABEL_COLUMN], val_prob, labels=[0, 1])),
    )
