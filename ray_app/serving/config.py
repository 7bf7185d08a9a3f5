"""The Serve config document, the one `serve run`, `ray-app serve`, the deploy step and the
RayService's serveConfigV2 all use; pure data (no Ray Serve import), so generating manifests
does not start Serve.

    serve run kuberay/serve-config.yaml     # the document the RayService embeds
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ray_app.core.config import ServeConfig
from ray_app.core.constants import APP_NAME, SERVE_PORT

IMPORT_PATH = "ray_app.serving.graph:build_app"
LOCAL_HOST = "127.0.0.1"
POD_HOST = "0.0.0.0"  # nosec B104: pod networking; only the RayService's config uses it

# Serve's throughput settings (its RAY_SERVE_THROUGHPUT_OPTIMIZED set, read from the
# environment when a process starts). Measured on 2 cores, single-record p50 at concurrency 1
# (README): defaults 17.5 ms; gRPC between proxy and replicas and between deployments 11.8 ms;
# user code and router on the replica's own event loop 10.6 ms; HAProxy in place of the
# Python proxy, with the ingress replica serving HTTP directly, 5.9 ms.
# The replicas' share rides in the Serve config (the application's runtime_env), so a plain
# `serve run` of it gets them too (p50 16.2 -> 10.6 ms, README):
REPLICA_ENV = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # A registry that is not up yet (cold start) is asked again every model_poll_s: one try
    # and one retry of 10 s each, not MLflow's default 7 retries with back-off (minutes).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# ...the rest is read by the controller and proxies, which start before any application: the
# environment of `ray start` / `serve run` / the RayService pods (`ray-app serve` sets it).
SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    **REPLICA_ENV,
}

# Overload: each Api replica works on at most 64 requests and queues 64 more; beyond that
# Serve answers 503 with Retry-After at once (BUSY), so latency stays bounded instead of
# growing with the queue (README "Running it safely", measured at concurrency 256).
API_MAX_ONGOING, API_MAX_QUEUED = 64, 64


class VersionPin(BaseModel):
    """`user_config` of Preprocess and Model: the registry version they serve. Changing only
    this in the Serve config is a lightweight update: the live replicas load the version and
    swap it in (no restart, no request refused); None: the version the alias named at build.
    """

    model_config = ConfigDict(extra="forbid")

    model_version: str | None = None


def model_uri_of(args: ServeConfig, version: str) -> str:
    """The URI that loads `version` of the model `args` names."""
    uri = args.model_uri or ""
    if uri.startswith("models:/"):
        name = uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
        return f"models:/{name}/{version}"
    return version


# Deployment sizing for a 2-CPU box; the RayService overlays scale replicas, not this code.
DEPLOYMENTS: list[dict[str, Any]] = [
    {"name": "Api", "num_replicas": 1, "max_ongoing_requests": API_MAX_ONGOING,
     "max_queued_requests": API_MAX_QUEUED,
     "backpressure_config": {"status_code": 503, "retry_after_s": 1},
     "ray_actor_options": {"num_cpus": 0.5}},
    {"name": "Preprocess", "num_replicas": 1, "max_ongoing_requests": 256,
     "ray_actor_options": {"num_cpus": 0.5}},
    {"name": "Model", "max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 1},
     "autoscaling_config": {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                            "target_ongoing_requests": 64}},
]  # fmt: skip


def serve_config(
    args: ServeConfig | None = None,
    host: str = LOCAL_HOST,
    port: int = SERVE_PORT,
    model_version: str | None = None,
) -> dict:
    """The Serve config document (`serve run` and the RayService's serveConfigV2).

    Bound to 127.0.0.1 unless told otherwise: `serve run kuberay/serve-config.yaml` on a laptop
    must not open the API to the network. The RayService renders POD_HOST (0.0.0.0). A
    loopback host also allows anonymous /predict (`allow_anonymous: true`); any other host
    keeps `args.allow_anonymous` (default false: a replica without RAY_APP_API_KEY refuses).
    `model_version` pins a registry version (deploy, rollback) as the `user_config` of
    Preprocess and Model: the same `args` with another version is an in-place update.
    """
    args = args or ServeConfig()
    if is_loopback(host) and not args.allow_anonymous:
        # Only this machine reaches a loopback port: a laptop's `serve run` needs no key (the
        # replicas refuse to start keyless otherwise). Written into the document, not implied.
        args = args.model_copy(update={"allow_anonymous": True})
    # A document of its own: a caller that edits it (replica counts, autoscaling) must not
    # change the next one (a shallow copy shared the nested autoscaling_config dicts).
    deployments = copy.deepcopy(DEPLOYMENTS)
    if model_version is not None:
        pin = VersionPin(model_version=model_version).model_dump()
        for deployment in deployments:
            if deployment["name"] in ("Preprocess", "Model"):
                deployment["user_config"] = pin
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "logging_config": {"log_level": "WARNING", "enable_access_log": False},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "runtime_env": {"env_vars": dict(REPLICA_ENV)},
                "args": args.model_dump(),
                "deployments": deployments,
            }
        ],
    }


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def render_config(doc: dict) -> str:
    import yaml

    header = "# Generated by `ray-app serve-config`; `serve run` this file. Do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)


def local_serve_run(args: ServeConfig, host: str, port: int,
                    address: str | None) -> tuple[list[str], dict[str, str], Path]:  # fmt: skip
    """`ray-app serve`: the Serve config written to a temp file, and the `serve run` command
    and environment that run it (on a fresh local Ray unless `address` names one: never the
    cluster a leftover /tmp/ray/ray_current_cluster names, which `serve run` would join and
    hang on for minutes when that head is dead)."""
    import shutil
    import sys
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ray_app_serve_")) / "serve-config.yaml"
    path.write_text(render_config(serve_config(args, host=host, port=port)))
    serve_bin = shutil.which("serve") or str(Path(sys.executable).parent / "serve")
    return [serve_bin, "run", "--address", address or "local", str(path)], dict(SERVE_ENV), path
