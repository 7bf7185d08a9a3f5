"""A deep ensemble: K members of the one training loop, each a Ray Tune trial of its own."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray_app.core.config import AppConfig
from ray_app.training.contexts import RayContext
from ray_app.training.distributed import TrainOutcome, fetch, loop_spec
from ray_app.training.loop import OBJECTIVE, LoopSpec, train_loop
from ray_app.training.rows import worker_data


def _member_trial(params: dict[str, Any], datasets: dict[str, Any], spec: LoopSpec,
                  cache_mb: float) -> None:  # fmt: skip
    """One ensemble member: the shared loop in a Tune trial, with the member's seed."""
    member = replace(spec, train=spec.train.model_copy(update={"seed": params["seed"]}))
    data = worker_data(datasets["train"].iterator(), datasets["val"].iterator(), cache_mb)
    train_loop(member, data, RayContext("tune"))


def train_members(
    cfg: AppConfig,
    datasets: dict[str, Any],
    cardinalities: list[int],
    run_name: str,
    callbacks: list[Any] | None = None,
) -> list[TrainOutcome]:
    """A deep ensemble: `cfg.train.ensemble` members with seeds seed, seed+1, ..., each the
    one training loop in a Ray Tune trial of its own (`cpus_per_worker` CPUs; as many at once
    as the cluster holds), early-stopped on its own validation loss; a member whose process
    dies resumes from its last checkpoint. Returns the members in seed order.

    Trials, not a TorchTrainer per member: a member is one process (DDP would only split a
    26k-row epoch), so a trial skips Ray Train's worker-group start (12-14 s here) and Tune
    packs members onto whatever CPUs the cluster has. The data are the same materialized
    Datasets Tune trials read (`worker_data`)."""
    from ray import tune

    storage = Path(cfg.ray.storage_path).resolve()
    spec = loop_spec(cfg, cardinalities, storage / run_name)
    seeds = [cfg.train.seed + i for i in range(cfg.train.ensemble)]
    trainable = tune.with_parameters(_member_trial, datasets=datasets, spec=spec,
                                     cache_mb=cfg.ray.shard_cache_mb)  # fmt: skip
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": cfg.ray.cpus_per_worker}),
        param_space={"seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="min"),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(storage),
            callbacks=callbacks,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=OBJECTIVE, checkpoint_score_order="min"
            ),
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    outcomes = []
    results = [grid[i] for i in range(len(grid))]
    for result in sorted(results, key=lambda r: int((r.config or {})["seed"])):
        seed = int((result.config or {})["seed"])
        best = result.get_best_checkpoint(OBJECTIVE, "min")
        if result.error is not None or best is None or result.checkpoint is None:
            raise RuntimeError(f"ensemble member seed {seed} ({run_name}) failed: {result.error}")
        state, meta = fetch(best, result.checkpoint)
        outcomes.append(TrainOutcome(state, {**meta, "seed": seed}, best.path, wall, run_name))
    return outcomes
