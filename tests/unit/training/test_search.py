"""Search space and Katib Experiment tests: one definition, two runners, our own checks."""

from __future__ import annotations

import copy

import pytest
import yaml

from ray_app.core.config import AppConfig
from ray_app.core.errors import UserError
from ray_app.platform.katib import (
    build_experiment,
    check_experiment,
    hyperband_min_parallel,
    render_yaml,
)
from ray_app.training.katib import KATIB_METRIC_RE, format_metrics, parse_trial_args
from ray_app.training.search import apply_params, search_space, trial_config, tune_param_space
from tests.support.procs import REPO


def test_params_land_on_their_config_targets():
    cfg = apply_params(AppConfig(), {"lr": 0.002, "depth": 3, "batch-size": 512}, search_space())
    assert (cfg.train.lr, cfg.model.depth, cfg.train.batch_size) == (0.002, 3, 512)
    assert AppConfig().train.lr == 1e-3  # the base is not modified


def test_trial_config_turns_patience_off_so_the_scheduler_decides():
    cfg = trial_config(AppConfig(), {"max-epochs": 7})
    assert cfg.train.max_epochs == 7 and cfg.train.patience == 7


def test_tune_space_and_katib_parameters_come_from_the_same_definition():
    space = search_space(12)
    tune_space = tune_param_space(space)
    katib = build_experiment("random", image="x")["spec"]
    assert set(tune_space) == {p["name"] for p in katib["parameters"]} == {p.name for p in space}
    assert tune_space["max-epochs"] == 12  # the budget is fixed, not searched
    lr = next(p for p in katib["parameters"] if p["name"] == "lr")
    assert lr["parameterType"] == "double" and lr["feasibleSpace"]["distribution"] == "logUniform"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr=abc"], "--lr: 'abc' is not a number"),
        (["--lr=0.9"], r"--lr: 0.9 is outside"),
        (["--batch-size=100"], r"--batch-size: 100 is not one of \[128, 256, 512\]"),
        (["--nope=1"], "unknown hyperparameter --nope"),
        (["--lr"], "--lr needs a value"),
    ],
)
def test_bad_trial_arguments_are_user_errors(args, message):
    with pytest.raises(UserError, match=message):
        parse_trial_args(args)


def test_trial_arguments_parse_both_spellings():
    assert parse_trial_args(["--lr=0.001", "--depth", "2"]) == {"lr": 0.001, "depth": 2}


@pytest.mark.parametrize("variant", ["random", "hyperband"])
def test_generated_experiments_pass_checks_and_committed_yaml_is_up_to_date(variant):
    doc = build_experiment(variant, image="ghcr.io/ray-app/ray-app:0.1.0")
    assert check_experiment(doc) == []
    committed = (REPO / "katib" / f"experiment-{variant}.yaml").read_text()
    assert committed == render_yaml(doc), "run: ray-app katib-experiment --out-dir katib"
    spec = doc["spec"]
    assert spec["objective"]["objectiveMetricName"] == "val_log_loss"
    assert spec["objective"]["type"] == "minimize"
    assert spec["metricsCollectorSpec"]["source"]["fileSystemPath"] == {
        "path": "/mnt/katib/metrics", "kind": "File", "format": "TEXT"}  # fmt: skip
    if variant == "random":
        assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    else:
        assert spec["parallelTrialCount"] >= hyperband_min_parallel(3, 9) == 9


def _broken(mutate):
    doc = copy.deepcopy(build_experiment("hyperband", image="x"))
    mutate(doc)
    return check_experiment(doc)


def _container(doc):
    return doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]


def test_checks_catch_planted_mistakes():
    assert any(
        "not defined" in p
        for p in _broken(lambda d: _container(d)["command"].append("--x=${trialParameters.ghost}"))
    )
    assert any(
        "not used" in p
        for p in _broken(
            lambda d: d["spec"]["trialTemplate"]["trialParameters"].append(
                {"name": "unused", "reference": "lr"}
            )
        )
    )
    assert any(
        "min" in p and "> max" in p
        for p in _broken(
            lambda d: d["spec"]["parameters"][0]["feasibleSpace"].update(min="0.1", max="0.01")
        )
    )
    assert any(
        "parallelTrialCount" in p for p in _broken(lambda d: d["spec"].update(parallelTrialCount=3))
    )
    assert any("metrics collector" in p for p in _broken(
        lambda d: _container(d)["command"].pop()))  # fmt: skip


def test_metric_lines_match_katibs_regex_and_nan_is_refused():
    line = format_metrics({"epoch": 3, "val_log_loss": 0.3012, "val_accuracy": 0.86})
    assert KATIB_METRIC_RE.findall(line)[1][:2] == ("val_log_loss", "0.301200")
    with pytest.raises(FloatingPointError):
        format_metrics({"val_log_loss": float("nan")})


def test_experiment_yaml_is_a_katib_experiment():
    doc = yaml.safe_load((REPO / "katib" / "experiment-random.yaml").read_text())
    assert doc["apiVersion"] == "kubeflow.org/v1beta1" and doc["kind"] == "Experiment"
