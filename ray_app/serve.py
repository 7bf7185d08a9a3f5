"""Ray Serve deployment graph: FastAPI ingress -> preprocessing -> model.

    serve run kuberay/serve-config.yaml     # the document the RayService embeds
    ray-app serve                           # the same config on embedded defaults

Sizing (measured on 2 cores, see README): `max_ongoing_requests` well above Serve's default
of 5, which made the graph collapse under concurrency; `@serve.batch` on preprocessing and
on the model so that concurrent single-record requests share one transform / forward pass;
one torch thread per replica CPU.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from ray_app.api import create_api
from ray_app.artifacts import PREPROCESSOR, load_model
from ray_app.errors import UserError
from ray_app.features import Preprocessor

APP_NAME = "adult-income"
# Cluster-wide Serve settings (read by the controller, proxy and replicas at start, so they go
# in the environment of `ray start` / `serve run` / the RayService pods, not in the app config).
# Measured on 2 cores, single-record p50 at concurrency 1 (README): defaults 17.5 ms; gRPC
# between proxy and replicas and between deployments 11.8 ms; user code and router on the
# replica's own event loop 10.6 ms; HAProxy in place of the Python proxy, with the ingress
# replica serving HTTP directly, 5.9 ms.
SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


class ServeArgs(BaseModel):
    """`args` of the Serve application (the `args:` block of the config YAML)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str | None = Field(
        "models:/adult-income@champion", description="MLflow model URI or registry alias"
    )
    bundle_dir: str | None = Field(None, description="local model bundle (overrides model_uri)")
    # None: MLflow's own resolution (MLFLOW_TRACKING_URI in the replica's environment, else
    # ./mlflow.db), so `serve run` and the RayService (whose pods set the variable) share one doc.
    tracking_uri: str | None = None
    max_records: int = Field(1000, ge=1, description="records per /predict request")
    batch_size: int = Field(256, ge=1, description="@serve.batch max_batch_size")
    # 0: a batch is whatever queued while the previous one ran (no added latency at low load).
    batch_wait_s: float = Field(0.0, ge=0.0, description="@serve.batch wait")
    torch_threads: int = Field(1, ge=1)


def resolve_bundle(args: ServeArgs) -> tuple[Path, str]:
    """Local bundle directory and model version ('local' for a bundle_dir)."""
    if args.bundle_dir:
        return Path(args.bundle_dir), "local"
    if not args.model_uri:
        raise UserError("serve args need model_uri or bundle_dir")
    import mlflow
    from mlflow.tracking import MlflowClient

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    version = _registry_version(MlflowClient(), args.model_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model_uri))
    bundle = local / "artifacts" / "bundle"
    if not (bundle / PREPROCESSOR).exists():
        raise UserError(f"{args.model_uri}: not a ray_app model (no artifacts/bundle)")
    return bundle, version


def _registry_version(client: Any, uri: str) -> str:
    """'models:/name@alias' or 'models:/name/3' -> '3'; other URIs -> the URI itself."""
    if not uri.startswith("models:/"):
        return uri
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        if client is None:
            raise UserError(f"{uri}: an alias needs the registry to resolve it")
        name, alias = ref.split("@", 1)
        return str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return version or uri


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5})
class Preprocess:
    """Raw records -> encoded arrays, with the preprocessor JSON fitted at training time."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ServeArgs(**args)
        bundle, _ = resolve_bundle(self.args)
        self.pre = Preprocessor.load(bundle / PREPROCESSOR)
        self.__call__.set_max_batch_size(self.args.batch_size)  # type: ignore[attr-defined]
        self.__call__.set_batch_wait_timeout_s(self.args.batch_wait_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.0)
    async def __call__(
        self, batch: list[dict[str, list[Any]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        # One transform for all requests in the batch, then split back per request.
        sizes = [len(columns["age"]) for columns in batch]
        merged = {c: [v for columns in batch for v in columns[c]] for c in batch[0]}
        x_cat, x_num = self.pre.transform(merged)
        bounds = np.cumsum([0, *sizes])
        return [(x_cat[a:b], x_num[a:b]) for a, b in itertools.pairwise(bounds)]


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class Model:
    """Encoded arrays -> P(>50K); weights loaded with weights_only=True."""

    def __init__(self, args: dict[str, Any]) -> None:
        import torch

        self.args = ServeArgs(**args)
        torch.set_num_threads(self.args.torch_threads)
        bundle, self.version = resolve_bundle(self.args)
        self.model = load_model(bundle)
        self.__call__.set_max_batch_size(self.args.batch_size)  # type: ignore[attr-defined]
        self.__call__.set_batch_wait_timeout_s(self.args.batch_wait_s)  # type: ignore[attr-defined]

    def info(self) -> dict[str, str]:
        return {"model_version": self.version}

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.0)
    async def __call__(self, batch: list[tuple[np.ndarray, np.ndarray]]) -> list[list[float]]:
        import torch

        sizes = [len(x_cat) for x_cat, _ in batch]
        x_cat = torch.from_numpy(np.concatenate([b[0] for b in batch]))
        x_num = torch.from_numpy(np.concatenate([b[1] for b in batch]))
        with torch.inference_mode():
            prob = torch.sigmoid(self.model(x_cat, x_num)).numpy().astype(float)
        bounds = np.cumsum([0, *sizes])
        return [prob[a:b].tolist() for a, b in itertools.pairwise(bounds)]


@dataclass
class _GraphScoring:
    """This ingress replica's view of the graph: preprocessing chained into the model."""

    preprocess: DeploymentHandle
    model: DeploymentHandle
    model_version: str

    async def score(self, columns: dict[str, list[Any]]) -> list[float]:
        # Awaiting here and passing the arrays on measured faster than handing the pending
        # preprocessing response to the model (p50 11.0 vs 11.8 ms before HAProxy).
        encoded = await self.preprocess.remote(columns)
        result: list[float] = await self.model.remote(encoded)
        return result

    async def ready(self) -> bool:
        try:
            await asyncio.wait_for(self.model.info.remote(), timeout=2.0)
            return True
        except Exception:
            return False


# One ingress replica per process: its __init__ fills this in for the module-level app.
_replica: dict[str, Any] = {"scoring": None, "max_records": 1000}


# Named module functions, not lambdas or methods: Serve ships the ingress class and its app
# to the replica with cloudpickle, which copies the globals of anything it pickles by value;
# module-level functions are pickled by reference and so share the replica's module state.
def _scoring() -> _GraphScoring | None:
    scoring: _GraphScoring | None = _replica["scoring"]
    return scoring


def _max_records() -> int:
    return int(_replica["max_records"])


def _configure_replica(scoring: _GraphScoring, max_records: int) -> None:
    # Called from Api.__init__, whose class Serve pickles by value (its globals are copies).
    _replica.update(scoring=scoring, max_records=max_records)


app = create_api(_scoring, _max_records)


@serve.deployment(max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(app)
class Api:
    """FastAPI ingress (/health, /metrics, /predict, /docs)."""

    def __init__(self, preprocess: DeploymentHandle, model: DeploymentHandle, args: dict) -> None:
        parsed = ServeArgs(**args)
        version = "local" if parsed.bundle_dir else _registry_version(None, parsed.model_uri or "")
        _configure_replica(_GraphScoring(preprocess, model, version), parsed.max_records)


def build_app(args: dict[str, Any]) -> Any:
    """Serve application builder (`import_path: ray_app.serve:build_app`).

    A registry alias is resolved here, once: every replica then loads the same pinned version
    (`models:/adult-income/3`), even if the alias moves while replicas start or restart.
    """
    serve_args = ServeArgs(**args)
    if serve_args.model_uri and "@" in serve_args.model_uri and not serve_args.bundle_dir:
        import mlflow
        from mlflow.tracking import MlflowClient

        if serve_args.tracking_uri:
            mlflow.set_tracking_uri(serve_args.tracking_uri)
        name = serve_args.model_uri.removeprefix("models:/").split("@", 1)[0]
        version = _registry_version(MlflowClient(), serve_args.model_uri)
        serve_args.model_uri = f"models:/{name}/{version}"
    parsed = serve_args.model_dump()
    preprocess = Preprocess.bind(parsed)  # type: ignore[attr-defined]
    model = Model.bind(parsed)  # type: ignore[attr-defined]
    return Api.bind(preprocess, model, parsed)  # type: ignore[attr-defined]


# Deployment sizing for a 2-CPU box; the RayService overlays scale replicas, not this code.
DEPLOYMENTS: list[dict[str, Any]] = [
    {"name": "Api", "num_replicas": 1, "max_ongoing_requests": 512,
     "ray_actor_options": {"num_cpus": 0.5}},
    {"name": "Preprocess", "num_replicas": 1, "max_ongoing_requests": 256,
     "ray_actor_options": {"num_cpus": 0.5}},
    {"name": "Model", "max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 1},
     "autoscaling_config": {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                            "target_ongoing_requests": 64}},
]  # fmt: skip


def serve_config(args: ServeArgs | None = None, host: str = "0.0.0.0", port: int = 8000) -> dict:
    """The Serve config document (`serve run` and the RayService's serveConfigV2)."""
    args = args or ServeArgs()
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "logging_config": {"log_level": "WARNING", "enable_access_log": False},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "ray_app.serve:build_app",
                "args": args.model_dump(),
                "deployments": DEPLOYMENTS,
            }
        ],
    }


def render_config(doc: dict) -> str:
    import yaml

    header = "# Generated by `ray-app serve-config`; `serve run` this file. Do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)
