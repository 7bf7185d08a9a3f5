"""The whole pipeline on this machine (kfp.local), one console line per step.

ray-app pipeline run --local --ray-address http://127.0.0.1:8265
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_app.core.config import LaunchConfig
from ray_app.platform.pipeline.definition import build_pipeline

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain_text(text: str) -> str:
    """kfp.local's messages without their terminal colours."""
    return _ANSI.sub("", text)


class TaskLines(logging.Filter):
    """kfp.local's task records as one console line each (`say`); the records still reach
    kfp's own handler (the log file). A filter on the root logger, because kfp.local replaces
    the root's handlers for every task but leaves its filters alone."""

    _TASK = re.compile(
        r"^(Executing task|Task) '([^']+)'(?: finished with status (\w+)| outputs:)?"
    )

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__()
        self.say, self.started, self.ended = say, {}, []  # type: ignore[var-annotated]

    def filter(self, record: logging.LogRecord) -> bool:
        text = plain_text(record.getMessage())
        match = self._TASK.match(text)
        if not match:
            return True
        kind, task, status = match.groups()
        if kind == "Executing task":
            self.started[task] = time.monotonic()
            self.say(f"  {task:<13} running")
        elif status:
            seconds = time.monotonic() - self.started.get(task, time.monotonic())
            self.ended.append((task, status))
            self.say(f"  {task:<13} {status:<8} {seconds:6.1f} s")
        else:  # "Task 'x' outputs:" + the outputs, one per line
            found = re.search(r"model_version['\"]?:\s*['\"]?(\d+)", text)
            if found:
                done = "serving" if task == "deploy-op" else "registered"
                self.say(f"  {task:<13} {done} version {found.group(1)}")
            improved = re.search(r"Output: (True|False)\b", text)
            if task == "evaluate-op" and improved:
                verdict = "champion: deploy" if improved.group(1) == "True" else "not better: keep"
                self.say(f"  {task:<13} {verdict}")
        return True


def run_local(
    launch: dict[str, Any],
    pipeline_root: Path,
    train_args: str = "",
    run_tune: bool = False,
    tune_args: str = "",
    say: Callable[[str], None] | None = None,
) -> list[tuple[str, str]]:
    """The whole pipeline in subprocesses of this machine (kfp.local), against `launch`;
    `say`: one line per task started / ended. Returns (task, status) in the order they ended."""
    import sys

    from kfp import local

    # Steps run as `python3 -m kfp.dsl.executor_main`: this interpreter's environment first.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    lines = TaskLines(say or (lambda _: None))
    root = logging.getLogger()
    root.addFilter(lines)
    try:
        build_pipeline()(
            launch=launch, train_args=train_args, run_tune=run_tune, tune_args=tune_args
        )
    finally:
        root.removeFilter(lines)
    return lines.ended


def run_pipeline_here(
    cfg: LaunchConfig,
    pipeline_root: Path,
    train_args: str,
    run_tune: bool,
    tune_args: str,
    say: Callable[[str], None],
    log: Path | None,
) -> str:
    """`ray-app pipeline run --local`: the pipeline against the head `cfg` names; a failed
    step is one UserError naming it (and the log its output went to). Returns the summary."""
    from ray_app.core.errors import UserError

    try:
        launch = cfg.model_dump(mode="json", exclude_none=True)  # KFP parameters hold no null
        ended = run_local(launch, pipeline_root, train_args, run_tune, tune_args, say=say)
    except RuntimeError as exc:  # kfp.local: "Task 'x' finished with status FAILURE"
        where = f"; its output is in {log}" if log else ""
        raise UserError(f"pipeline failed: {plain_text(str(exc)).rstrip('.')}{where}") from None
    deployed = any(task == "deploy-op" for task, _ in ended)
    return (f"pipeline finished: {len(ended)} steps, "
            + ("new champion deployed" if deployed else "serving unchanged"))  # fmt: skip
