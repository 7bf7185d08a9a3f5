"""A Katib trial: the shared loop in this process, its metrics in Katib's TEXT format.

    ray-app katib-trial --lr=0.001 --batch-size=256 --metrics-file=/tmp/metrics

The Experiment that runs these trials is built in `ray_app.platform.katib`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.ml.metrics import evaluate_predictions
from ray_app.ml.scoring import Scorer
from ray_app.training.contexts import LocalContext
from ray_app.training.loop import OBJECTIVE, LoopSpec, train_loop
from ray_app.training.rows import prepare_data
from ray_app.training.search import Param, search_space, trial_config

# The regex Katib's File collector applies to each line in TEXT format (kubeflow/katib v0.19.0,
# pkg/metricscollector/v1beta1/common/const.go L47, DefaultFilter). It has no spelling for
# NaN or inf: 'val_log_loss=nan' parses as an empty value, so they are never written.
KATIB_METRIC_RE = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
EPOCH_METRICS = ("val_log_loss", "val_accuracy", "val_f1")
TEST_METRICS = ("test_accuracy", "test_f1", "test_log_loss", "test_roc_auc")


def parse_trial_args(args: list[str], space: list[Param] | None = None) -> dict[str, Any]:
    """['--lr=0.001', '--batch-size', '256'] -> {'lr': 0.001, 'batch-size': 256}."""
    by_name = {p.name: p for p in space or search_space()}
    params: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}; use --name=value")
        name, sep, text = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise UserError(f"--{name} needs a value")
            i, text = i + 1, args[i + 1]
        if name not in by_name:
            raise UserError(f"unknown hyperparameter --{name}; known: {sorted(by_name)}")
        params[name] = by_name[name].parse(text)
        i += 1
    return params


def format_metrics(values: dict[str, float]) -> str:
    """One 'name=value' line; refuses NaN/inf, which Katib's regex cannot parse."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"metric(s) {bad} are not finite; the trial failed")
    return " ".join(
        f"{k}={v:.6f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def run_katib_trial(cfg: AppConfig, params: dict[str, Any], metrics_file: Path) -> dict[str, Any]:
    """Train once with the shared loop; append Katib TEXT lines per epoch and the test metrics."""
    if "max-epochs" in params:
        # The search space's budget value is the trial's own; keep the two in step.
        cfg = cfg.model_copy(deep=True)
        cfg.search.max_epochs = int(params["max-epochs"])
    cfg = trial_config(cfg, params)
    splits, pre, data = prepare_data(cfg)
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    with metrics_file.open("w") as out:

        def write_epoch(metrics: dict[str, float], _checkpoint: Any) -> None:
            line = {"epoch": int(metrics["epoch"]), **{k: metrics[k] for k in EPOCH_METRICS}}
            out.write(format_metrics(line) + "\n")
            out.flush()

        spec = LoopSpec(cfg.model, cfg.train, pre.cardinalities, threads=cfg.ray.cpus_per_worker)
        try:
            result = train_loop(spec, data, LocalContext(on_report=write_epoch))
        except FloatingPointError as exc:  # Katib marks the trial Failed on the exit code
            raise UserError(f"trial diverged: {exc}; {metrics_file} holds no NaN") from None
        assert result.best_state is not None
        prob = Scorer.from_state(pre, cfg.model, result.best_state).predict_proba(splits.test)
        test = evaluate_predictions(splits.test, prob)["metrics"]
        out.write(format_metrics({k: test[k] for k in TEST_METRICS}) + "\n")
    best = min(result.meta["history"], key=lambda r: r[OBJECTIVE])
    return {"params": params, OBJECTIVE: best[OBJECTIVE], "epochs": result.meta["epoch"], **test}
