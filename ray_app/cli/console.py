"""What a person sees: a status line, one line per epoch / trial / step, a summary table; Ray's
own output goes to a log file unless --verbose. Results go to stdout (--json: one line)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console

err = Console(stderr=True, log_path=False)
# --json: where the result line goes once stdout_for_result has pointed fd 1 at stderr.
_RESULT_STREAM: list[TextIO] = []


def say(text: str) -> None:
    err.print(text, highlight=False, soft_wrap=True)  # paths stay whole, on one line


def log_file(storage: str | Path, kind: str) -> Path:
    """<storage>/logs/<kind>-<time>.log (a temp folder for URI storage)."""
    storage = str(storage)
    base = Path(tempfile.gettempdir()) if "://" in storage else Path(storage).resolve()
    return base / "logs" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.log"


@contextlib.contextmanager
def stdout_for_result(as_json: bool) -> Iterator[None]:
    """With --json, stdout carries the result line only: anything else goes to stderr (Ray
    Tune's tables, and Ray's own lines, which its background threads and C++ code print at
    any time, after the work too: a "(raylet) Task ... failed" line once came after the
    result). So the process's file descriptor 1 is pointed at stderr for the rest of its life
    and the result is written to a copy of the original (`emit`). Inside a test runner that
    replaced sys.stdout, only sys.stdout is redirected, for the block."""
    if not as_json:
        yield
        return
    try:
        real = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a replaced sys.stdout (CliRunner)
        real = False
    if not real:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sys.stdout.flush()
    _RESULT_STREAM[:] = [os.fdopen(os.dup(1), "w")]
    os.dup2(2, 1)
    yield


@contextlib.contextmanager
def ray_output_to_file(log: Path | None) -> Iterator[None]:
    """Everything but this command's own console goes to `log`: Ray's and Ray Train's INFO
    lines, Ray Data's progress, worker logs, library warnings (the process's stdout and stderr
    file descriptors, so output from C++ and child processes too). None: no redirection."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    previous = err.file
    err.file = terminal
    try:
        with log.open("ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                import ray

                if ray.is_initialized():  # its last worker lines land in the log, not after
                    ray.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
        err.file = previous
        terminal.close()


@contextlib.contextmanager
def session(storage: str | Path, kind: str, verbose: bool, as_json: bool,
            ) -> Iterator[Callable[[str], None]]:  # fmt: skip
    """A long command's console: Ray's output to <storage>/logs/<kind>-*.log (unless
    --verbose), results kept off stdout (--json), a status line; yields `progress(message)`."""
    log = None if verbose else log_file(storage, kind)
    if log is not None:
        say(f"Ray's own output: {log} (--verbose: here)")
    with stdout_for_result(as_json), ray_output_to_file(log), err.status("starting") as status:

        def progress(message: str) -> None:
            status.update(message)
            err.log(message)

        yield progress


def print_epoch(metrics: dict[str, Any]) -> None:
    """One console line per epoch, as Ray Train commits it."""
    err.print(
        f"  epoch {int(metrics['epoch']):>2}  loss {metrics['train_loss']:.4f}  "
        f"val loss {metrics['val_log_loss']:.4f}  acc {metrics['val_accuracy']:.4f}  "
        f"AUC {metrics.get('val_roc_auc', float('nan')):.4f}  {metrics['epoch_time_s']:.1f} s",
        highlight=False,
    )


def emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    """The result: one JSON line on stdout (--json), else `key: value` lines."""
    if as_json:
        stream = _RESULT_STREAM[0] if _RESULT_STREAM else sys.stdout
        stream.write(json.dumps(result, default=str) + "\n")
        stream.flush()
        return
    err.print(f"[bold]{title}[/bold]")
    for key, value in result.items():
        typer.echo(f"{key}: {value}")


def train_summary(result: dict[str, Any]) -> None:
    """The figures a person wants after `ray-app train` (the whole result: --json)."""
    from rich.table import Table

    table = Table(title="test split", title_justify="left", show_edge=False)
    for column in ("", "accuracy", "log loss", "ROC-AUC", "F1"):
        table.add_column(column, justify="right" if column else "left")
    keys = ("accuracy", "log_loss", "roc_auc", "f1")
    for i, member in enumerate(result.get("members") or []):
        table.add_row(f"member {i} (seed {member['seed']})", *(f"{member[k]:.4f}" for k in keys))
    n = result.get("ensemble_members", 1)
    table.add_row("this model" if n == 1 else f"ensemble of {n}",
                  *(f"{result[f'test_{k}']:.4f}" for k in keys))  # fmt: skip
    if "gbdt_test_accuracy" in result:
        table.add_row("HistGradientBoosting", *(f"{result[f'gbdt_test_{k}']:.4f}" for k in keys))
    err.print(table)
    champion = result.get("champion") or {}
    if result.get("model_version") is None:
        model = "model not registered"
    elif champion.get("promoted"):
        model = f"model {result['registered_model']} v{result['model_version']}: champion"
    else:
        model = (f"model {result['registered_model']} v{result['model_version']}: not promoted "
                 f"(champion stays v{champion.get('champion_version')})")  # fmt: skip
    epochs = (f"{result['epochs_run']} epochs in {n} members" if n > 1 else
              f"best epoch {result['best_epoch']} of {result['epochs_run']}")  # fmt: skip
    err.print(f"{epochs}, {result['train_wall_time_s']:.0f} s of training; {model}",
              highlight=False)  # fmt: skip
    nodes = {node for node in result.get("worker_nodes") or [] if node}
    restarts = result.get("worker_group_restarts", 0)
    if len(nodes) > 1 or restarts:
        resumed = ", ".join(str(e) for e in result.get("resumed_from_epochs") or [])
        err.print(
            f"workers on {len(nodes)} node(s); worker group restarted {restarts} time(s)"
            + (f", resumed from epoch {resumed}" if resumed else ""),
            highlight=False,
        )
