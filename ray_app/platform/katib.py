"""The Katib Experiments (random search + medianstop, hyperband), built from the same search
space as Ray Tune and checked for what Katib's webhook would refuse.

    ray-app katib-experiment --out-dir katib/
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from ray_app.core.errors import UserError
from ray_app.training.loop import OBJECTIVE
from ray_app.training.search import Param, search_space

PLACEHOLDER_RE = re.compile(r"\$\{trialParameters\.([A-Za-z0-9_-]+)\}")
ADDITIONAL_METRICS = ["val_accuracy", "val_f1", "test_accuracy", "test_f1"]
METRICS_PATH = "/mnt/katib/metrics"
CONTAINER = "training-container"
HYPERBAND = {"eta": 3, "r_l": 9}


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


def _trial_template(space: list[Param], image: str) -> dict[str, Any]:
    """The trial: a Job running `ray-app katib-trial` with every parameter substituted."""
    command = ["ray-app", "katib-trial"]
    command += [f"--{p.name}=${{trialParameters.{p.camel}}}" for p in space]
    command.append(f"--metrics-file={METRICS_PATH}")
    container = {
        "name": CONTAINER,
        "image": image,
        "command": command,
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                      "limits": {"cpu": "2", "memory": "4Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip
    annotations = {"annotations": {"sidecar.istio.io/inject": "false"}}
    pod = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
        "containers": [container],
    }
    return {
        "primaryContainerName": CONTAINER,
        "trialParameters": [
            {"name": p.camel, "reference": p.name, "description": p.description} for p in space
        ],
        "trialSpec": {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "spec": {"backoffLimit": 0, "template": {"metadata": annotations, "spec": pod}},
        },
    }


def _algorithm(variant: Literal["random", "hyperband"]) -> dict[str, Any]:
    """Random search with median stopping, or hyperband over the epoch budget."""
    if variant == "random":
        return dict(
            algorithm={"algorithmName": "random", "algorithmSettings": [
                {"name": "random_state", "value": "0"}]},
            earlyStopping={"algorithmName": "medianstop", "algorithmSettings": [
                {"name": "min_trials_required", "value": "3"},
                {"name": "start_step", "value": "4"}]},
            parallelTrialCount=3, maxTrialCount=24, maxFailedTrialCount=3,
        )  # fmt: skip
    eta, r_l = HYPERBAND["eta"], HYPERBAND["r_l"]
    return dict(
        algorithm={"algorithmName": "hyperband", "algorithmSettings": [
            {"name": "resource_name", "value": "max-epochs"},
            {"name": "eta", "value": str(eta)},
            {"name": "r_l", "value": str(r_l)}]},
        parallelTrialCount=hyperband_min_parallel(eta, r_l),
        maxTrialCount=hyperband_min_parallel(eta, r_l) * 2, maxFailedTrialCount=3,
    )  # fmt: skip


def build_experiment(
    variant: Literal["random", "hyperband"],
    image: str,
    namespace: str = "kubeflow",
    max_epochs: int = 16,
) -> dict[str, Any]:
    """The Experiment as a dict, validated through the kubeflow-katib-api pydantic models."""
    from kubeflow_katib_api.models.v1beta1_experiment import V1beta1Experiment

    space = search_space(max_epochs)
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
        "trialTemplate": _trial_template(space, image),
        **_algorithm(variant),
    }
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
