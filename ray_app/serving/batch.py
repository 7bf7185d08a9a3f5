"""Batch scoring (`ray-app predict`): files of any size scored by Ray Data actors with a
registered model; invalid rows reported beside the output, never dropped silently."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray_app.core.config import AppConfig
from ray_app.core.runtime import check_shared_input, check_shared_storage, ensure_ray
from ray_app.data.files import list_files, read_for_scoring, write_bad_rows
from ray_app.data.raydata import get
from ray_app.ml.scoring import score_dataset
from ray_app.tracking import store
from ray_app.tracking.registry import pin, registry_bundle

# Blocks of at most this many rows: enough blocks for every actor, few enough to keep overhead low.
BLOCK_ROWS = 100_000


def predict_files(
    source: str, out: str, bundle_dir: str, version: str, fmt: str = "parquet", actors: int = 1
) -> dict[str, Any]:
    """Batch scoring: every file of `source` read and checked in its own task, scored by
    `actors` actors that load the bundle once, written to the folder `out` (Parquet or CSV:
    the rows' own columns, source_file, source_row, probability, label, model_version).
    Invalid rows go to `<out>.bad_rows.csv` with file, line or row, column and reason."""
    import ray

    @ray.remote(num_returns=2)
    def read(path: str) -> tuple[Any, dict[str, Any]]:
        import pyarrow as pa

        frame, errors = read_for_scoring(path)
        return pa.Table.from_pandas(frame, preserve_index=False), {"rows": len(frame),
                                                                    "errors": errors}  # fmt: skip

    start = time.perf_counter()
    pairs: list[Any] = [read.remote(path) for path in list_files(source)]
    # File-level problems (no header, a missing column) stop here, before anything is written.
    infos: list[dict[str, Any]] = get([info for _, info in pairs])
    rows = sum(info["rows"] for info in infos)

    @ray.remote
    def chunk(table: Any, start: int, length: int) -> Any:
        return table.slice(start, length)

    # Blocks of at most 100k rows (not one per file), so every actor has work. Cut here, by
    # tasks that run before the scoring actors hold the CPUs: Dataset.repartition() upstream
    # of them waited for a CPU forever on this 2-CPU machine.
    blocks = [
        chunk.remote(table, start, BLOCK_ROWS)
        for (table, _), info in zip(pairs, infos, strict=True)
        for start in range(0, info["rows"], BLOCK_ROWS)
    ]
    ray.wait(blocks, num_returns=len(blocks))
    scored = score_dataset(ray.data.from_arrow_refs(blocks), bundle_dir, version, actors)  # type: ignore[arg-type]
    if fmt == "csv":
        scored.write_csv(out)
    else:
        scored.write_parquet(out)
    bad, bad_file = write_bad_rows([info["errors"] for info in infos], out)
    wall = time.perf_counter() - start
    return {
        "rows_scored": rows,
        "bad_rows": bad,
        "bad_rows_file": bad_file,
        "out": out,
        "format": fmt,
        "model_version": version,
        "wall_s": round(wall, 3),
        "rows_per_s": round(rows / wall, 1) if wall else None,
    }


def predict_registered(cfg: AppConfig, model_uri: str, source: str, out: str,
                       fmt: str = "parquet", actors: int = 1) -> dict[str, Any]:  # fmt: skip
    """`ray-app predict`: the registered model's bundle (an alias pinned to its version),
    then `predict_files` on Ray (`cfg.ray`: a cluster, or a new local Ray)."""
    store.set_tracking(cfg.tracking)
    uri, version = pin(model_uri, None)
    ensure_ray(cfg.ray)
    if "://" not in out:  # written by tasks on other nodes, in other working directories
        out = str(Path(out).resolve())
    # On a cluster the files are read, and the output written, on the worker nodes: a folder
    # only this machine sees is refused here, before any work (an output scattered over the
    # nodes' own disks would look like a short result).
    check_shared_input(list_files(source)[0])
    check_shared_storage(Path(out).parent, option="--out",
                         why="Ray Data writes the output files from every node")  # fmt: skip
    with registry_bundle(uri) as bundle:  # removed once its files went to the scoring actors
        return predict_files(source, out, str(bundle), version, fmt, actors)
