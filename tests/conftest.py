"""Shared fixtures of every tier: small real data, a temp MLflow store, one local Ray.

Tiers (markers, from the folder a test lives in): `unit` (pure Python: no Ray, no servers),
`integration` (real local Ray, MLflow, Serve, external tools), `e2e` (whole flows).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ray_app.core.config import AppConfig
from ray_app.data.splits import Splits, load_splits
from tests.support.procs import REPO

# Keep torch single-threaded in the test process: 2 threads ran a small MLP 66x slower here.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def splits() -> Splits:
    """The real shipped data, split as the app splits it."""
    return load_splits(AppConfig().data)


@pytest.fixture(scope="session")
def small_splits() -> Splits:
    """A stratified 3,000-row subsample for quick training."""
    return load_splits(AppConfig().data.model_copy(update={"subsample": 3000}))


@pytest.fixture()
def quick_cfg(tmp_path: Path) -> AppConfig:
    """Two workers, two epochs, 3,000 rows; MLflow and checkpoints under tmp_path."""
    cfg = AppConfig()
    cfg.data.subsample = 3000
    cfg.train.max_epochs = 2
    cfg.ray.num_workers = 2
    cfg.ray.storage_path = tmp_path / "ray_results"
    cfg.tracking.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray for the module, started the way `ray-app` starts one (`ensure_ray`: a
    fresh instance with the dashboard's State API, which Ray Train's placement-group cleaner
    needs; 2 CPUs here and in CI); shut down afterwards."""
    import ray

    from ray_app.core.config import RayConfig
    from ray_app.core.runtime import ensure_ray

    assert ensure_ray(RayConfig()) == "local"
    yield ray
    ray.shutdown()


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the marker of its tier folder (tests/<tier>/...)."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


# Each test's setup + call + teardown seconds, written beside .ci/stage.py's records, so the
# summary of `make test` can list the slowest tests of all tiers together.
_DURATIONS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    import json

    records = REPO / ".ci" / ".stages"
    worker = hasattr(session.config, "workerinput")  # pytest-xdist: the controller writes
    if records.is_dir() and _DURATIONS and not worker:
        (records / f"durations-{os.getpid()}.json").write_text(json.dumps(_DURATIONS))
