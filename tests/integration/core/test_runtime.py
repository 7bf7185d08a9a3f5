"""Starting or joining Ray predictably: a stale cluster file, a dead address, the config file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from ray_app.core.config import AppConfig
from tests.support.procs import ENV, free_port

pytestmark = pytest.mark.slow


@pytest.fixture()
def stale_cluster_file():
    """A Ray temp dir (RAY_TMPDIR, short: Ray's socket paths) whose ray_current_cluster names
    a head that is gone, as a `ray start --head` that was killed leaves it."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (root / "ray").mkdir()
    dead = f"127.0.0.1:{free_port()}"
    (root / "ray" / "ray_current_cluster").write_text(dead)
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    yield {**env, "RAY_TMPDIR": str(root)}, dead
    shutil.rmtree(root, ignore_errors=True)


def test_a_stale_cluster_file_does_not_stop_the_embedded_default(stale_cluster_file):
    """No address: a fresh local Ray, whatever the cluster file names (Ray's own default would
    try to join the dead head for minutes)."""
    env, _ = stale_cluster_file
    code = ("from ray_app.core.config import RayConfig; "
            "from ray_app.core.runtime import ensure_ray; "
            "import ray; print(ensure_ray(RayConfig()), ray.cluster_resources()['CPU']); "
            "ray.shutdown()")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[0] == "local"


@pytest.mark.parametrize("address", ["auto", "dead"])
def test_a_dead_address_fails_in_seconds_with_one_line(stale_cluster_file, address, head):
    """`--ray-address auto` (the stale file's dead head) or a dead host:port: exit 2 within
    seconds, one line naming the address and the fix, no traceback. Another Ray runs on the
    machine meanwhile (the tier's head): Ray's own `auto` would join that one instead."""
    env, dead = stale_cluster_file
    given = dead if address == "dead" else "auto"
    start = time.monotonic()
    proc = subprocess.run(
        ["ray-app", "train", "--subsample", "3000", "--ray-address", given],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    # (Ray resolves 127.0.0.1 to this node's IP: the port is what names the dead head.)
    assert re.search(rf"cannot reach a Ray cluster at \S+:{dead.rsplit(':', 1)[1]} ", proc.stderr)
    assert "ray start --head" in proc.stderr and "Traceback" not in proc.stderr
    assert took < 30, took


def test_a_failed_pipeline_step_is_one_line_naming_it_and_its_log(tmp_path):
    """`pipeline run --local` against a head that is not there: the console shows the steps,
    then one error line naming the failed step and the log file that holds its output."""
    dead = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        ["ray-app", "pipeline", "run", "--local", "--ray-address", dead, "--train-args",
         "--subsample 3000", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
         "--storage-path", str(tmp_path / "rr"), "--pipeline-root", str(tmp_path / "runs")],
        env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert re.fullmatch(r"  preprocess-op SUCCESS +[\d.]+ s", lines[2]), lines
    assert re.fullmatch(r"  train-op +FAILURE +[\d.]+ s", lines[4]), lines
    found = re.fullmatch(r"error: pipeline failed: .*Inner task failed: 'train-op'; its output "
                         r"is in (\S+\.log)", lines[-1])  # fmt: skip
    assert found and "Traceback" not in proc.stderr, lines
    assert f"Failed to connect to Ray at address: {dead}" in Path(found.group(1)).read_text()


def test_config_show_prints_the_tree_and_a_file_and_flags_override_it(tmp_path):
    """`ray-app config show` is the whole tree (loadable again); --config FILE changes it;
    the command line overrides the file; a bad field names the file and the field."""
    shown = subprocess.run(["ray-app", "config", "show"], env=ENV, capture_output=True,
                           text=True, timeout=60, check=True).stdout  # fmt: skip
    assert AppConfig(**yaml.safe_load(shown)) == AppConfig()
    run = tmp_path / "run.yaml"
    run.write_text("train:\n  max_epochs: 3\n  lr: 0.002\nray:\n  num_workers: 1\n")
    command = ["ray-app", "config", "show", "--config", str(run)]
    shown = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=60,
                           check=True).stdout  # fmt: skip
    tree = yaml.safe_load(shown)
    assert (tree["train"]["max_epochs"], tree["train"]["lr"], tree["ray"]["num_workers"]) == (
        3, 0.002, 1)  # fmt: skip
    assert tree["train"]["batch_size"] == AppConfig().train.batch_size  # untouched defaults

    from ray_app.core.config import build_config

    cfg = build_config(run, train={"max_epochs": 5, "lr": None})  # --epochs 5, no --lr
    assert (cfg.train.max_epochs, cfg.train.lr, cfg.ray.num_workers) == (5, 0.002, 1)
    run.write_text("train:\n  max_epoch: 3\n")
    bad = subprocess.run(["ray-app", "config", "show", "--config", str(run)], env=ENV,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2
    assert str(run) in bad.stderr and "train.max_epoch" in bad.stderr


def test_train_runs_on_its_config_file_with_flags_over_it_and_logs_the_tree(small_model):
    """The tier's small model was trained with `--config run.yaml` (subsample 3000,
    max_epochs 5, a storage path) and `--epochs 2` on the command line, on the shared head
    (`--ray-address`): the run logged the whole tree it really used."""
    tree, result = small_model["config"], small_model["result"]
    assert (tree["data"]["subsample"], tree["train"]["max_epochs"]) == (3000, 2)
    assert tree["ray"]["storage_path"] == str(small_model["work"] / "rr")
    assert result["epochs_run"] <= 2 and result["model_version"] == 1
    assert Path(result["checkpoint"]).is_relative_to(small_model["work"] / "rr")


def test_auto_without_a_cluster_file_is_one_line(tmp_path):
    """`auto` names the head `ray start` last started; with no cluster file there is none."""
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        ["ray-app", "train", "--subsample", "3000", "--ray-address", "auto"],
        env={**env, "RAY_TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        f"--ray-address auto: no Ray cluster file ({tmp_path}/ray/ray_current_cluster;"
        in " ".join(proc.stderr.split())
    )
