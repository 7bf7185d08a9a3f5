"""Options that set a field of the config tree, declared once: the flag, the field it sets,
its help. A command names the ones it takes (`@overrides("data", "train", ...)`); they arrive
as one `Overrides` mapping ({"train.max_epochs": 3, ...}; None: not given), and the help shows
the tree's own default (so the CLI never repeats a default).

Precedence, lowest first: the tree's defaults, --config FILE, the environment, these options.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ray_app.core.config import AppConfig, build_config
from ray_app.core.settings import Settings

Overrides = dict[str, Any]


@dataclass(frozen=True)
class Opt:
    flag: str  # "--epochs" (a bool: "--register/--no-register")
    target: str  # "train.max_epochs"
    kind: type
    help: str
    name: str = ""  # the Python parameter (default: from the flag)

    @property
    def param(self) -> str:
        return self.name or self.flag.split("/")[0].lstrip("-").replace("-", "_")


def _default(target: str) -> Any:
    section, field = target.split(".")
    return getattr(getattr(AppConfig(), section), field)


DATA = [
    Opt("--data", "data.train_path", str, "your data: a file, folder, glob or URI (s3://, gs://, "
        "file://) of CSV (UCI, Kaggle adult.csv or OpenML header), Parquet or raw UCI files; "
        "without --test-data it is split into train/validation/test (default: the shipped "
        "data/adult.data)", "data_path"),
    Opt("--test-data", "data.test_path", str, "test file (default: data/adult.test for the "
        "shipped data, else a split of --data)"),
    Opt("--test-fraction", "data.test_fraction", float, "share of --data held out as the test "
        "split when no --test-data"),
    Opt("--max-test-overlap", "data.max_test_overlap", float, "largest share of test rows that "
        "may repeat training rows; above it the run stops before training"),
    Opt("--data-dir", "data.data_dir", Path, "folder with the shipped UCI files (default: the "
        "repository's data/; env RAY_APP_DATA_DIR)"),
]  # fmt: skip
SUBSAMPLE = [Opt("--subsample", "data.subsample", int, "train on N rows only (quick runs)")]
RAY = [
    Opt("--ray-address", "ray.address", str, "existing Ray cluster (default: a new local Ray; "
        "env RAY_ADDRESS)"),
    Opt("--storage-path", "ray.storage_path", Path, "Ray Train/Tune storage: checkpoints "
        "(shared by every node on a cluster; env RAY_APP_STORAGE_PATH)"),
]  # fmt: skip
TRACKING = [
    Opt("--tracking-uri", "tracking.tracking_uri", str, "MLflow tracking URI (env "
        "MLFLOW_TRACKING_URI)"),
]  # fmt: skip
TRAIN = [
    Opt("--workers", "ray.num_workers", int, "Ray Train workers (DDP)"),
    Opt("--cpus-per-worker", "ray.cpus_per_worker", int, "CPUs (and torch threads) per worker"),
    Opt("--use-gpu/--no-use-gpu", "ray.use_gpu", bool, "one GPU per worker"),
    Opt("--epochs", "train.max_epochs", int, "maximum epochs"),
    Opt("--batch-size", "train.batch_size", int, "global batch size"),
    Opt("--lr", "train.lr", float, "learning rate"),
    Opt("--seed", "train.seed", int, "training seed"),
    Opt("--ensemble", "train.ensemble", int, "K > 1: a deep ensemble of K members (seeds "
        "seed..seed+K-1), trained at once as Ray Tune trials, registered as one model"),
    Opt("--max-failures", "ray.max_failures", int, "worker failures to recover from"),
    Opt("--experiment", "tracking.experiment", str, "MLflow experiment"),
    Opt("--registered-model", "tracking.registered_model", str, "MLflow registered model"),
    Opt("--register/--no-register", "tracking.register_model", bool, "register a model version"),
]  # fmt: skip
SEARCH = [
    Opt("--num-samples", "search.num_samples", int, "trials to sample"),
    Opt("--max-concurrent", "search.max_concurrent", int, "trials at once"),
    Opt("--max-epochs", "search.max_epochs", int, "epoch budget per trial (ASHA max_t)"),
    Opt("--grace-period", "search.grace_period", int, "ASHA grace period (epochs)"),
    Opt("--reduction-factor", "search.reduction_factor", int, "ASHA reduction factor"),
    Opt("--scheduler", "search.scheduler", str, "'asha' or 'fifo' (full budget)"),
    Opt("--workers-per-trial", "search.workers_per_trial", int, "0: loop inside the trial "
        "(fastest here); N: TorchTrainer"),
    Opt("--workers", "ray.num_workers", int, "Ray Train workers for the retrain"),
    Opt("--seed", "search.seed", int, "sampling seed"),
    Opt("--name", "search.name", str, "search name (folder under storage)"),
    Opt("--resume/--no-resume", "search.resume", bool, "continue the interrupted search --name"),
    Opt("--retrain/--no-retrain", "search.retrain", bool, "retrain and register the best config"),
]  # fmt: skip
MONITOR = [Opt("--threshold", "monitor.psi_threshold", float, "PSI above which a feature "
               "drifted"),
           Opt("--retention-days", "monitor.retention_days", int, "a prediction log's "
               "partitions older than this many days are removed (default: kept)")]  # fmt: skip
GROUPS: dict[str, list[Opt]] = {"data": DATA, "subsample": SUBSAMPLE, "ray": RAY,
                                "tracking": TRACKING, "train": TRAIN, "search": SEARCH,
                                "monitor": MONITOR}  # fmt: skip


def _annotation(opt: Opt) -> Any:
    """`opt.kind | None` (None: not given), its help ending with the tree's default."""
    from rich.markup import escape

    default = _default(opt.target)
    if opt.kind is bool:
        shown = f" [{'yes' if default else 'no'}]"
    elif default is None or opt.target == "data.data_dir":  # a path of this machine: not shown
        shown = ""
    else:
        shown = f" [{default}]"
    return Annotated[opt.kind | None, typer.Option(opt.flag, help=escape(opt.help + shown))]


def overrides(*groups: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of `groups` to a command; it receives them as `options: Overrides`."""
    opts = [opt for group in groups for opt in GROUPS[group]]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # the module's strings
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in signature.parameters.values() if p.name != "options"]  # fmt: skip
        added = [inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=_annotation(o)) for o in opts]  # fmt: skip

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {o.target: kwargs.pop(o.param) for o in opts}
            return command(options=given, **kwargs)

        del wrapper.__wrapped__  # typer reads the signature below, not the command's
        params = [*[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own], *added]
        setattr(wrapper, "__signature__", signature.replace(parameters=params))  # noqa: B010
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


def config(options: Overrides, config_file: Path | None = None) -> AppConfig:
    """The tree for a command: defaults < --config FILE < the environment < its options."""
    sections: dict[str, dict[str, Any]] = {}
    for target, value in options.items():
        section, field = target.split(".")
        sections.setdefault(section, {})[field] = value
    return build_config(config_file, Settings(), **sections)


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML of the config tree (`ray-app config show`); "
                 "options given on the command line override it"),
]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as one JSON object")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", help="Ray's own log lines on the console, not in a file")
]
# `deploy --local` and `launch --local`: the head whose REST APIs (Serve, Job Submission) they use.
HeadAddressOpt = Annotated[
    str, typer.Option("--ray-address", help="--local: the Ray head's dashboard URL")
]
ModelUriOpt = Annotated[str | None, typer.Option(help="MLflow model URI or registry alias "
                        "[the champion]")]  # fmt: skip
