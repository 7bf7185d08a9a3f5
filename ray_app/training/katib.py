"""Katib: one trial with the shared loop (TEXT metrics file), and the Experiment built from the
same search space as Ray Tune.

    ray-app katib-trial --lr=0.001 --batch-size=256 --metrics-file=/tmp/metrics
    ray-app katib-experiment --out-dir katib/
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.data.files import LABEL_COLUMN
from ray_app.ml.bundle import Scorer
from ray_app.ml.metrics import binary_metrics
from ray_app.training.jobs import prepare_data
from ray_app.training.loop import OBJECTIVE, LocalContext, LoopSpec, train_loop
from ray_app.training.search import Param, search_space, trial_config

# The regex Katib's File collector applies to each line in TEXT format (kubeflow/katib v0.19.0,
# pkg/metricscollector/v1beta1/common/const.go L47, DefaultFilter). It has no spelling for
# NaN or inf: 'val_log_loss=nan' parses as an empty value, so they are never written.
KATIB_METRIC_RE = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
PLACEHOLDER_RE = re.compile(r"\$\{trialParameters\.([A-Za-z0-9_-]+)\}")
EPOCH_METRICS = ("val_log_loss", "val_accuracy", "val_f1")
TEST_METRICS = ("test_accuracy", "test_f1", "test_log_loss", "test_roc_auc")
ADDITIONAL_METRICS = ["val_accuracy", "val_f1", "test_accuracy", "test_f1"]
METRICS_PATH = "/mnt/katib/metrics"
CONTAINER = "training-container"
HYPERBAND = {"eta": 3, "r_l": 9}


# ---- trial --------------------------------------------------------------------------------
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
        test = binary_metrics(splits.test[LABEL_COLUMN].to_numpy(), prob)
        out.write(format_metrics({k: test[k] for k in TEST_METRICS}) + "\n")
    best = min(result.meta["history"], key=lambda r: r[OBJECTIVE])
    return {"params": params, OBJECTIVE: best[OBJECTIVE], "epochs": result.meta["epoch"], **test}


# ---- experiment ---------------------------------------------------------------------------
def _katib_parameter(param: Param) -> dict[str, Any]:
    if param.fixed:  # the epoch budget: an int range of one point, as Katib's hyperband expects
        value = str(int(param.high or 0))
        return {"name": param.name, "parameterType": "int",
                "feasibleSpace": {"min": value, "max": value}}  # fmt: skip
    if param.kind == "choice":
        values = list(param.values or ())
        return {"name": param.name, "parameterType": "categorical",
                "feasibleSpace": {"list": [str(v) for v in values]}}  # fmt: skip
    space: dict[str, Any] = {"min": str(param.low), "max": str(param.high)}
    if param.kind == "int":
        space = {"min": str(int(param.low or 0)), "max": str(int(param.high or 0))}
        return {"name": param.name, "parameterType": "int", "feasibleSpace": space}
    space["distribution"] = "logUniform" if param.kind == "loguniform" else "uniform"
    return {"name": param.name, "parameterType": "double", "feasibleSpace": space}


def build_experiment(
    variant: Literal["random", "hyperband"],
    image: str,
    namespace: str = "kubeflow",
    max_epochs: int = 16,
) -> dict[str, Any]:
    """The Experiment as a dict, validated through the kubeflow-katib-api pydantic models."""
    from kubeflow_katib_api.models.v1beta1_experiment import V1beta1Experiment

    space = search_space(max_epochs)
    command = ["ray-app", "katib-trial"]
    command += [f"--{p.name}=${{trialParameters.{p.camel}}}" for p in space]
    command.append(f"--metrics-file={METRICS_PATH}")
    spec: dict[str, Any] = {
        "objective": {
            "type": "minimize",
            "objectiveMetricName": OBJECTIVE,
            "additionalMetricNames": ADDITIONAL_METRICS,
        },
        "parameters": [_katib_parameter(p) for p in space],
        "metricsCollectorSpec": {
            "collector": {"kind": "File"},
            "source": {"fileSystemPath": {"path": METRICS_PATH, "kind": "File", "format": "TEXT"}},
        },
        "trialTemplate": {
            "primaryContainerName": CONTAINER,
            "trialParameters": [
                {"name": p.camel, "reference": p.name, "description": p.description} for p in space
            ],
            "trialSpec": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 1000,
                                "fsGroup": 1000,
                            },
                            "containers": [
                                {
                                    "name": CONTAINER,
                                    "image": image,
                                    "command": command,
                                    "resources": {
                                        "requests": {"cpu": "1", "memory": "2Gi"},
                                        "limits": {"cpu": "2", "memory": "4Gi"},
                                    },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                }
                            ],
                        },
                    },
                },
            },
        },
    }
    if variant == "random":
        spec.update(
            algorithm={"algorithmName": "random", "algorithmSettings": [
                {"name": "random_state", "value": "0"}]},
            earlyStopping={"algorithmName": "medianstop", "algorithmSettings": [
                {"name": "min_trials_required", "value": "3"},
                {"name": "start_step", "value": "4"}]},
            parallelTrialCount=3, maxTrialCount=24, maxFailedTrialCount=3,
        )  # fmt: skip
    else:
        eta, r_l = HYPERBAND["eta"], HYPERBAND["r_l"]
        spec.update(
            algorithm={"algorithmName": "hyperband", "algorithmSettings": [
                {"name": "resource_name", "value": "max-epochs"},
                {"name": "eta", "value": str(eta)},
                {"name": "r_l", "value": str(r_l)}]},
            parallelTrialCount=hyperband_min_parallel(eta, r_l),
            maxTrialCount=hyperband_min_parallel(eta, r_l) * 2, maxFailedTrialCount=3,
        )  # fmt: skip
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {
            "name": f"adult-income-{variant}",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "ray-app"},
        },
        "spec": spec,
    }
    # Round trip through Katib's own models: a misspelt field or wrong type fails here.
    return V1beta1Experiment.from_dict(doc).to_dict()


def hyperband_min_parallel(eta: int, r_l: float) -> int:
    """Katib's rule: parallelTrialCount >= eta ** floor(log(r_l) / log(eta))."""
    s_max = math.floor(math.log(r_l) / math.log(eta) + 1e-9)
    return int(eta**s_max)


def check_experiment(doc: dict[str, Any]) -> list[str]:
    """What Katib's webhook would reject (the CRD validates nothing): a list of problems."""
    problems: list[str] = []
    spec = doc.get("spec", {})
    params = {p["name"]: p for p in spec.get("parameters", [])}
    template = spec.get("trialTemplate", {})
    trial_params = {t["name"]: t for t in template.get("trialParameters", [])}
    used = set(PLACEHOLDER_RE.findall(yaml.safe_dump(template.get("trialSpec", {}))))
    for name in sorted(used - set(trial_params)):
        problems.append(f"trialSpec uses ${{trialParameters.{name}}} but it is not defined")
    for name in sorted(set(trial_params) - used):
        problems.append(f"trialParameter {name} is defined but not used in trialSpec")
    for name, tp in trial_params.items():
        if tp.get("reference") not in params:
            problems.append(
                f"trialParameter {name} references unknown parameter {tp.get('reference')}"
            )
    for name, p in params.items():
        kind, space = p.get("parameterType"), p.get("feasibleSpace", {})
        if kind == "categorical":
            if not space.get("list"):
                problems.append(f"parameter {name}: categorical needs a non-empty list")
            continue
        try:
            low, high = float(space["min"]), float(space["max"])
        except (KeyError, ValueError):
            problems.append(f"parameter {name}: {kind} needs numeric min and max")
            continue
        if low > high:
            problems.append(f"parameter {name}: min {low} > max {high}")
        if kind == "int" and (low != int(low) or high != int(high)):
            problems.append(f"parameter {name}: int bounds must be integers")
        if space.get("distribution") == "logUniform" and low <= 0:
            problems.append(f"parameter {name}: logUniform needs min > 0")
    algorithm = spec.get("algorithm", {})
    settings = {s["name"]: s["value"] for s in algorithm.get("algorithmSettings", [])}
    if algorithm.get("algorithmName") == "hyperband":
        eta, r_l = int(settings.get("eta", 3)), float(settings.get("r_l", 0))
        need = hyperband_min_parallel(eta, r_l)
        if spec.get("parallelTrialCount", 0) < need:
            problems.append(
                f"hyperband needs parallelTrialCount >= {eta}^floor(log(r_l)/log(eta)) = {need}"
            )
        if settings.get("resource_name") not in params:
            problems.append("hyperband resource_name must name a parameter")
        if spec.get("earlyStopping"):
            problems.append("hyperband does not take an earlyStopping algorithm")
    objective = spec.get("objective", {})
    source = spec.get("metricsCollectorSpec", {}).get("source", {}).get("fileSystemPath", {})
    command = " ".join(_container(doc).get("command", []))
    if source.get("path") and f"--metrics-file={source['path']}" not in command:
        problems.append("the trial command does not write to the metrics collector's path")
    if objective.get("objectiveMetricName") != OBJECTIVE:
        problems.append(f"objective must be {OBJECTIVE}")
    return problems


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    pod = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == CONTAINER)


def render_yaml(doc: dict[str, Any]) -> str:
    header = (
        "# Generated by `ray-app katib-experiment` from ray_app/training/search.py; do not edit.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False)


def write_experiments(out_dir: Path, image: str, namespace: str = "kubeflow") -> list[Path]:
    """Write both variants after checking them; refuse to write a broken Experiment."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    variants: tuple[Literal["random", "hyperband"], ...] = ("random", "hyperband")
    for variant in variants:
        doc = build_experiment(variant, image=image, namespace=namespace)
        problems = check_experiment(doc)
        if problems:
            raise UserError(f"Experiment {variant} is invalid: " + "; ".join(problems))
        path = out_dir / f"experiment-{variant}.yaml"
        path.write_text(render_yaml(doc))
        paths.append(path)
    return paths
