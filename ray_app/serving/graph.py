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
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from ray_app.core.errors import UserError
from ray_app.ml.bundle import PREPROCESSOR, ensemble_size, load_model, mean_probability
from ray_app.ml.drift import DriftWindow, bin_codes, load_reference, psi, score_counts
from ray_app.ml.features import Preprocessor
from ray_app.serving.api import API_KEY_ENV, MAX_BODY_BYTES, Unavailable, api_keys, create_api
from ray_app.tracking.registry import NoModelYet, pin

logger = logging.getLogger("ray.serve")
# What a handle call raises when the replica it went to died or stopped answering.
LOST = (RayActorError, ActorUnavailableError, DeploymentUnavailableError, BackPressureError)
APP_NAME = "adult-income"
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

LOCAL_HOST = "127.0.0.1"
POD_HOST = "0.0.0.0"  # nosec B104: pod networking; only the RayService's config uses it


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
    max_body_bytes: int = Field(
        MAX_BODY_BYTES, ge=1024, description="/predict body limit (413 before it is parsed)"
    )
    batch_size: int = Field(256, ge=1, description="@serve.batch max_batch_size")
    # 0: a batch is whatever queued while the previous one ran (no added latency at low load).
    batch_wait_s: float = Field(0.0, ge=0.0, description="@serve.batch wait")
    torch_threads: int = Field(1, ge=1)
    # Cold start: an alias that resolves to nothing yet is looked up again this often.
    model_poll_s: float = Field(5.0, gt=0.0, description="no model yet: registry poll period")
    # Drift gauges on /metrics: PSI of the last `drift_window` scored rows against the training
    # reference, once at least `drift_min_rows` have been seen (fewer give noisy PSI).
    drift_window: int = Field(5000, ge=100, description="rows in the drift window")
    drift_min_rows: int = Field(500, ge=1, description="rows before PSI is exported")


class VersionPin(BaseModel):
    """`user_config` of Preprocess and Model: the registry version they serve. Changing only
    this in the Serve config is a lightweight update: the live replicas load the version and
    swap it in (no restart, no request refused); None: the version the alias named at build.
    """

    model_config = ConfigDict(extra="forbid")

    model_version: str | None = None


def _uri_of(args: ServeArgs, version: str) -> str:
    """The URI that loads `version` of the model `args` names."""
    uri = args.model_uri or ""
    if uri.startswith("models:/"):
        name = uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
        return f"models:/{name}/{version}"
    return version


def fetch_bundle(args: ServeArgs, version: str | None = None) -> tuple[Path, str]:
    """Local bundle directory and its version ('local' for a bundle_dir).

    Without `version`, the configured URI (an alias is resolved once, then the pinned version
    is downloaded, so the files and the version agree even if the alias moves meanwhile).
    """
    if args.bundle_dir:
        return Path(args.bundle_dir), "local"
    if not args.model_uri:
        raise UserError("serve args need model_uri or bundle_dir")
    import mlflow

    if version is None:
        uri, version = pin(args.model_uri, args.tracking_uri)
    else:
        uri = _uri_of(args, version)
    from ray_app.tracking.registry import registry_bundle

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    return registry_bundle(uri), version


# The version a Preprocess replica stamps on its output; the Model scores with that version.
Encoded = tuple[np.ndarray, np.ndarray, str]


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5})
class Preprocess:
    """Raw records -> encoded arrays, with the preprocessor JSON fitted at training time.

    Which version: `user_config` {"model_version": "3"} (a deploy or rollback sets it; Serve
    hands it to the live replicas through `reconfigure`, no restart), else the version the
    alias named when the app was built. On a fresh registry (the alias names no version yet)
    the replica starts empty and looks for one every `model_poll_s` (from Serve's periodic
    health check and from /health). Its output carries the version that encoded it.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ServeArgs(**args)
        # (preprocessor, version, drift window, ensemble members), swapped as one reference: a
        # batch (and /health) reads it once.
        self.loaded: tuple[Preprocessor, str, DriftWindow | None, int] | None = None
        self.looked = 0.0
        self.__call__.set_max_batch_size(self.args.batch_size)  # type: ignore[attr-defined]
        self.__call__.set_batch_wait_timeout_s(self.args.batch_wait_s)  # type: ignore[attr-defined]

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the pinned version (or, with none, whatever the alias names), then swap it in;
        requests keep being answered by the previous one while it loads."""
        await asyncio.to_thread(self._load, VersionPin(**user_config).model_version)

    def _load(self, version: str | None = None) -> None:
        self.looked = time.monotonic()
        try:
            bundle, version = fetch_bundle(self.args, version)
        except NoModelYet as exc:
            logger.warning("%s: serving 'no-model' until one is registered", exc)
            return
        reference = load_reference(bundle)  # None: a bundle from before monitoring
        window = DriftWindow(reference, self.args.drift_window) if reference else None
        pre = Preprocessor.load(bundle / PREPROCESSOR)
        self.loaded = (pre, version, window, ensemble_size(bundle))

    async def _maybe_load(self) -> None:
        if self.loaded is None and time.monotonic() - self.looked >= self.args.model_poll_s:
            await asyncio.to_thread(self._load)

    async def check_health(self) -> None:
        await self._maybe_load()

    async def info(self) -> dict[str, Any]:
        await self._maybe_load()
        loaded = self.loaded
        return {"model_version": loaded[1] if loaded else None,
                "members": loaded[3] if loaded else None}  # fmt: skip

    def drift(self) -> dict[str, Any] | None:
        """PSI per feature over this replica's window, and the score reference (the ingress
        bins the scores it returned); None before `drift_min_rows` rows or without a reference.
        """
        window = self.loaded[2] if self.loaded else None
        if window is None or window.filled < min(self.args.drift_min_rows, window.size):
            return None
        return {"rows": window.filled, "feature_psi": window.psi(),
                "score_fractions": window.reference["score"]["fractions"]}  # fmt: skip

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.0)
    async def __call__(self, batch: list[dict[str, list[Any]]]) -> list[Encoded | None]:
        loaded = self.loaded
        if loaded is None:
            return [None] * len(batch)
        pre, version, window, _ = loaded
        # One transform for all requests in the batch, then split back per request.
        sizes = [len(columns["age"]) for columns in batch]
        merged = {c: [v for columns in batch for v in columns[c]] for c in batch[0]}
        x_cat, x_num = pre.transform(merged)
        if window is not None:  # a few numpy calls per batch
            window.add(bin_codes(window.reference, x_cat, merged))
        bounds = np.cumsum([0, *sizes])
        return [(x_cat[a:b], x_num[a:b], version) for a, b in itertools.pairwise(bounds)]


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class Model:
    """Encoded arrays -> P(>50K); weights loaded with weights_only=True.

    Scores each request with the version its preprocessing used: the pinned one is loaded
    by `reconfigure` (at start, and on a rollout before Preprocess switches); another (a
    first champion found after a cold start) on first use. At most two are kept, so requests
    encoded by the old version still score during a rollout.
    """

    KEEP = 2

    def __init__(self, args: dict[str, Any]) -> None:
        import torch

        self.args = ServeArgs(**args)
        torch.set_num_threads(self.args.torch_threads)
        self.models: dict[str, Any] = {}
        self.__call__.set_max_batch_size(self.args.batch_size)  # type: ignore[attr-defined]
        self.__call__.set_batch_wait_timeout_s(self.args.batch_wait_s)  # type: ignore[attr-defined]

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the pinned version before Preprocess stamps it on requests (no stall then)."""
        version = VersionPin(**user_config).model_version
        if version is not None:
            await self._model(version)

    def info(self) -> dict[str, list[str]]:
        return {"model_versions": list(self.models)}

    def _load(self, version: str) -> Any:
        bundle, _ = fetch_bundle(self.args, version)
        return load_model(bundle)

    async def _model(self, version: str) -> Any:
        if version not in self.models:
            model = await asyncio.to_thread(self._load, version)
            while len(self.models) >= self.KEEP:
                self.models.pop(next(iter(self.models)))
            self.models[version] = model
        return self.models[version]

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.0)
    async def __call__(self, batch: list[Encoded]) -> list[tuple[list[float], str]]:
        import torch

        out: list[tuple[list[float], str]] = [([], "")] * len(batch)
        # Normally one version per batch; grouped so a mixed batch still scores each correctly.
        for version in dict.fromkeys(v for _, _, v in batch):
            index = [i for i, item in enumerate(batch) if item[2] == version]
            model = await self._model(version)
            sizes = [len(batch[i][0]) for i in index]
            x_cat = torch.from_numpy(np.concatenate([batch[i][0] for i in index]))
            x_num = torch.from_numpy(np.concatenate([batch[i][1] for i in index]))
            with torch.inference_mode():  # an ensemble: all members in one stacked pass
                prob = mean_probability(model, x_cat, x_num).numpy().astype(float)
            bounds = np.cumsum([0, *sizes])
            for i, (a, b) in zip(index, itertools.pairwise(bounds), strict=True):
                out[i] = (prob[a:b].tolist(), version)
        return out


@dataclass
class _GraphScoring:
    """This ingress replica's view of the graph: preprocessing chained into the model."""

    preprocess: DeploymentHandle
    model: DeploymentHandle
    model_version: str | None = None
    members: int | None = None  # of the version Preprocess loaded (/health)
    # The scores this replica returned last (the drift window of the score PSI).
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=5000))

    async def drift(self) -> dict[str, Any] | None:
        """Feature PSI from Preprocess's window, score PSI from this replica's (for /metrics)."""
        try:
            found = await asyncio.wait_for(self.preprocess.drift.remote(), timeout=2.0)
        except Exception:
            return None
        if found is None or not self.scores:
            return found
        counts = score_counts(np.fromiter(self.scores, float))
        return {**found, "score_psi": psi(found["score_fractions"], counts)}

    async def score(self, columns: dict[str, list[Any]]) -> tuple[list[float], str] | None:
        # Awaiting here and passing the arrays on measured faster than handing the pending
        # preprocessing response to the model (p50 11.0 vs 11.8 ms before HAProxy).
        try:
            encoded = await self.preprocess.remote(columns)
            if encoded is None:
                self.model_version = None
                return None
            result: tuple[list[float], str] = await self.model.remote(encoded)
        except LOST as exc:
            # A replica died with this request on it (Serve routes new ones to its
            # replacement): 503 + Retry-After, not a 500.
            raise Unavailable(f"a serving replica was lost mid-request ({type(exc).__name__}); "
                              "retry") from exc  # fmt: skip
        self.model_version = result[1]
        self.scores.extend(result[0])
        return result

    async def ready(self) -> bool:
        try:
            info = await asyncio.wait_for(self.preprocess.info.remote(), timeout=2.0)
            await asyncio.wait_for(self.model.info.remote(), timeout=2.0)
        except Exception:
            return False
        self.model_version, self.members = info["model_version"], info.get("members")
        return True


# One ingress replica per process: its __init__ fills this in for the module-level app.
_replica: dict[str, Any] = {
    "scoring": None,
    "max_records": 1000,
    "waiting_for": None,
    "max_body_bytes": MAX_BODY_BYTES,
}


# Named module functions, not lambdas or methods: Serve ships the ingress class and its app
# to the replica with cloudpickle, which copies the globals of anything it pickles by value;
# module-level functions are pickled by reference and so share the replica's module state.
def _scoring() -> _GraphScoring | None:
    scoring: _GraphScoring | None = _replica["scoring"]
    return scoring


def _max_records() -> int:
    return int(_replica["max_records"])


def _max_body_bytes() -> int:
    return int(_replica["max_body_bytes"])


def _waiting_for() -> str | None:
    waiting: str | None = _replica["waiting_for"]
    return waiting


def _configure_replica(scoring: _GraphScoring, args: ServeArgs) -> None:
    # Called from Api.__init__, whose class Serve pickles by value (its globals are copies).
    _replica.update(
        scoring=scoring,
        max_records=args.max_records,
        waiting_for=args.model_uri or "",
        max_body_bytes=args.max_body_bytes,
    )
    if not api_keys():
        logger.warning("%s is not set: /predict answers anyone who reaches the port", API_KEY_ENV)


async def _drift() -> dict[str, Any] | None:
    scoring = _scoring()
    return await scoring.drift() if scoring else None


app = create_api(_scoring, _max_records, _waiting_for, _max_body_bytes, drift=_drift)


@serve.deployment(
    max_ongoing_requests=API_MAX_ONGOING,
    max_queued_requests=API_MAX_QUEUED,
    ray_actor_options={"num_cpus": 0.5},
)
@serve.ingress(app)
class Api:
    """FastAPI ingress (/health, /metrics, /predict, /docs)."""

    def __init__(self, preprocess: DeploymentHandle, model: DeploymentHandle, args: dict) -> None:
        parsed = ServeArgs(**args)
        scores: deque[float] = deque(maxlen=parsed.drift_window)
        _configure_replica(_GraphScoring(preprocess, model, scores=scores), parsed)


def build_app(args: dict[str, Any]) -> Any:
    """Serve application builder (`import_path: ray_app.serving.graph:build_app`).

    A registry alias is resolved here, once: every replica then loads the same pinned version
    (`models:/adult-income/3`), even if the alias moves while replicas start or restart. On a
    fresh registry (no version behind the alias yet) the app still deploys and answers
    /health with status "no-model" and /predict with 503, until the first version appears.
    """
    serve_args = ServeArgs(**args)
    pinned = VersionPin()
    if serve_args.bundle_dir:
        pinned.model_version = "local"
    elif serve_args.model_uri:
        try:
            pinned.model_version = pin(serve_args.model_uri, serve_args.tracking_uri)[1]
        except NoModelYet as exc:
            logger.warning("%s: deploying without a model (status 'no-model')", exc)
    # The pin is user_config, not an init argument: a config that changes only the version
    # (deploy, rollback) reconfigures the live replicas instead of replacing them.
    parsed, user_config = serve_args.model_dump(), pinned.model_dump()
    preprocess = Preprocess.options(user_config=user_config).bind(parsed)  # type: ignore[attr-defined]
    model = Model.options(user_config=user_config).bind(parsed)  # type: ignore[attr-defined]
    return Api.bind(preprocess, model, parsed)  # type: ignore[attr-defined]


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
    args: ServeArgs | None = None,
    host: str = LOCAL_HOST,
    port: int = 8000,
    model_version: str | None = None,
) -> dict:
    """The Serve config document (`serve run` and the RayService's serveConfigV2).

    Bound to 127.0.0.1 unless told otherwise: `serve run kuberay/serve-config.yaml` on a laptop
    must not open the API to the network. The RayService renders POD_HOST (0.0.0.0).
    `model_version` pins a registry version (deploy, rollback) as the `user_config` of
    Preprocess and Model: the same `args` with another version is an in-place update.
    """
    args = args or ServeArgs()
    deployments = [dict(d) for d in DEPLOYMENTS]
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
                "import_path": "ray_app.serving.graph:build_app",
                "runtime_env": {"env_vars": dict(REPLICA_ENV)},
                "args": args.model_dump(),
                "deployments": deployments,
            }
        ],
    }


def render_config(doc: dict) -> str:
    import yaml

    header = "# Generated by `ray-app serve-config`; `serve run` this file. Do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)
