"""Katib trial mode as Katib runs it: a subprocess writing a TEXT metrics file."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from ray_app.platform.katib import PLACEHOLDER_RE
from ray_app.training.katib import format_metrics
from tests.support.procs import ENV, REPO

# Katib's File collector's default filter, as written in Katib's source (kubeflow/katib v0.19.0,
# pkg/metricscollector/v1beta1/common/const.go L47): the oracle here is Katib, not our module.
KATIB_METRIC_RE = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


def _parse(path: Path) -> list[dict[str, float]]:
    """Parse like Katib's File collector: every name=value pair on every line."""
    lines = []
    for line in path.read_text().splitlines():
        pairs = KATIB_METRIC_RE.findall(line)
        # The whole line must be made of pairs: nothing Katib would silently skip.
        assert re.sub(KATIB_METRIC_RE, "", line).strip() == "", line
        lines.append({name: float(value) for name, value, *_ in pairs})
    return lines


def test_trial_subprocess_writes_parseable_metrics(tmp_path: Path):
    metrics = tmp_path / "metrics"
    proc = subprocess.run(
        ["ray-app", "katib-trial", "--lr=0.003", "--batch-size=256", "--max-epochs=2",
         "--subsample=3000", f"--metrics-file={metrics}"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = _parse(metrics)
    assert [line["epoch"] for line in lines[:-1]] == [1.0, 2.0]
    assert all("val_log_loss" in line and "val_f1" in line for line in lines[:-1])
    assert {"test_accuracy", "test_f1"} <= set(lines[-1])


def test_failing_trial_exits_nonzero(tmp_path: Path):
    proc = subprocess.run(
        ["ray-app", "katib-trial", "--lr=-1", f"--metrics-file={tmp_path / 'm'}"],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "--lr" in proc.stderr
    assert "Traceback" not in proc.stderr


def _value(param: dict, pick: int) -> str:
    space = param["feasibleSpace"]
    if param["parameterType"] == "categorical":
        return space["list"][pick % len(space["list"])]
    low, high = float(space["min"]), float(space["max"])
    value = low + (high - low) * (0.25 if pick == 0 else 0.75)
    return str(round(value)) if param["parameterType"] == "int" else f"{value:.6g}"


def test_local_emulation_substitutes_trial_parameters_and_reads_objective(tmp_path: Path):
    """What Katib does, done here: fill ${trialParameters.*}, run the container command."""
    doc = yaml.safe_load((REPO / "katib" / "experiment-random.yaml").read_text())
    spec = doc["spec"]
    params = {p["name"]: p for p in spec["parameters"]}
    refs = {t["name"]: t["reference"] for t in spec["trialTemplate"]["trialParameters"]}
    pod = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    collector_path = spec["metricsCollectorSpec"]["source"]["fileSystemPath"]["path"]
    objectives = []
    for pick in (0, 1):
        values = {name: _value(params[ref], pick) for name, ref in refs.items()}
        values["maxEpochs"] = "2"  # keep the emulated trials short
        filled = [PLACEHOLDER_RE.sub(lambda m, v=values: v[m.group(1)], p) for p in command]
        assert not any("${" in part for part in filled)
        metrics = tmp_path / f"trial{pick}" / "metrics"
        filled = [part.replace(collector_path, str(metrics)) for part in filled]
        proc = subprocess.run(
            [*filled, "--subsample=3000"], env=ENV, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, shlex.join(filled) + "\n" + proc.stderr[-2000:]
        # Katib's objective for a minimize metric: the minimum reported value.
        objective = min(line["val_log_loss"] for line in _parse(metrics) if "val_log_loss" in line)
        objectives.append(objective)
    assert all(0 < o < 1 for o in objectives)
    assert objectives[0] != objectives[1]  # different parameters, different trials


def test_the_writer_refuses_what_katibs_filter_cannot_read():
    # What Katib would make of NaN: the name with an empty value (the float parse then fails).
    assert KATIB_METRIC_RE.findall("val_log_loss=nan")[0][:2] == ("val_log_loss", "")
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(FloatingPointError, match="not finite"):
            format_metrics({"epoch": 2, "val_log_loss": bad})
    assert format_metrics({"epoch": 2, "val_log_loss": 0.25}) == "epoch=2 val_log_loss=0.250000"


DIVERGE = """
import sys, torch
from ray_app.cli.app import main
step, calls = torch.optim.AdamW.step, {"n": 0}
def diverging(self, *args, **kwargs):
    out = step(self, *args, **kwargs)
    calls["n"] += 1
    if calls["n"] == 12:  # inside epoch 2 (10 steps per epoch on 2,400 rows, batch 256)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
    return out
torch.optim.AdamW.step = diverging
sys.argv = ["ray-app", "katib-trial", "--max-epochs=3", "--batch-size=256", "--subsample=3000",
            "--metrics-file=" + sys.argv[1]]
main()
"""


def test_a_diverging_trial_fails_and_writes_no_nan(tmp_path: Path):
    """End to end: the weights go NaN in epoch 2; the trial exits non-zero (Katib marks it
    Failed) and the metrics file holds epoch 1 only, every line readable by Katib's filter."""
    import sys

    metrics = tmp_path / "metrics"
    proc = subprocess.run([sys.executable, "-c", DIVERGE, str(metrics)], env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trial diverged: validation log loss is nan" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    text = metrics.read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower()
    assert [line["epoch"] for line in _parse(metrics)] == [1.0]
