"""One `ray start --head` for the whole e2e tier (every test here submits to a head; none needs
a cluster of its own): started once, stopped by PID at the end of the session."""

from __future__ import annotations

import pytest

from ray_app.serving.config import SERVE_ENV
from tests.support.procs import free_port, ray_head

API_KEY = "e2e-key"  # pragma: allowlist secret (a test key)


@pytest.fixture(scope="session")
def head(tmp_path_factory):
    """A head as the RayService's pods have it: SERVE_ENV, MLFLOW_TRACKING_URI and the API key
    set.

    4 logical CPUs on this 2-core box: a deployed Serve graph holds 2 (as a RayService's own
    cluster would), and the pipeline tests still train on the same head after a deploy. The
    app one test deploys stays up for the next (the pipeline's deploy step then updates it,
    as it updates a running RayService); deleting it cost 35 s a test."""
    work = tmp_path_factory.mktemp("head")
    env = {
        **SERVE_ENV,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        # The key Secret's value (required: the RayService's serveConfigV2 allows no anonymous
        # /predict, so without it the replicas refuse to start).
        "RAY_APP_API_KEY": API_KEY,
        # HAProxy's stats and metrics listeners get free ports too (defaults 8404, 9101).
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }
    with ray_head(work / "head.log", env, num_cpus=4) as (url, head_env):
        yield {"url": url, "env": head_env, "work": work, "serve_port": free_port()}
