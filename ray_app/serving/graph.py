"""The Ray Serve deployment graph: FastAPI ingress (Api) -> Preprocess -> Model.

    serve run kuberay/serve-config.yaml     # the document the RayService embeds
    ray-app serve                           # the same config on embedded defaults

Sizing (measured on 2 cores, see docs/serving.md): `max_ongoing_requests` well above Serve's
default of 5, which made the graph collapse under concurrency; `@serve.batch` on preprocessing
and on the model so that concurrent single-record requests share one transform / forward pass;
one torch thread per replica CPU. The config document itself is `ray_app.serving.config`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from ray_app.core.config import BODY_TIMEOUT_S, MAX_BODY_BYTES, ServeConfig
from ray_app.core.settings import Settings
from ray_app.ml.bundle import PREPROCESSOR, ensemble_size
from ray_app.ml.drift import DriftWindow, bin_codes, load_reference, psi, score_counts
from ray_app.ml.features import Preprocessor
from ray_app.ml.scoring import Scorer
from ray_app.serving.api import Scored, create_api
from ray_app.serving.bundles import fetch_bundle
from ray_app.serving.config import API_MAX_ONGOING, API_MAX_QUEUED, VersionPin
from ray_app.serving.guards import check_keys
from ray_app.serving.predlog import PredictionLog
from ray_app.serving.schemas import Unavailable
from ray_app.tracking.registry import ModelUnavailable, pin

logger = logging.getLogger("ray.serve")
# What a handle call raises when the replica it went to died or stopped answering.
LOST = (RayActorError, ActorUnavailableError, DeploymentUnavailableError, BackPressureError)


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
        self.args = ServeConfig(**args)
        # (preprocessor, version, drift window, ensemble members), swapped as one reference: a
        # batch (and /health) reads it once.
        self.loaded: tuple[Preprocessor, str, DriftWindow | None, int] | None = None
        self.looked = 0.0
        self.waiting: str | None = None  # why there is no model yet (for /health)
        self.__call__.set_max_batch_size(self.args.batch_size)  # type: ignore[attr-defined]
        self.__call__.set_batch_wait_timeout_s(self.args.batch_wait_s)  # type: ignore[attr-defined]

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the pinned version (or, with none, whatever the alias names), then swap it in;
        requests keep being answered by the previous one while it loads."""
        await asyncio.to_thread(self._load, VersionPin(**user_config).model_version)

    def _load(self, version: str | None = None) -> None:
        self.looked = time.monotonic()
        try:
            # Everything is read into memory inside the block: a downloaded folder is removed.
            with fetch_bundle(self.args, version) as (bundle, version):
                reference = load_reference(bundle)  # None: a bundle from before monitoring
                pre = Preprocessor.load(bundle / PREPROCESSOR)
                members = ensemble_size(bundle)
        except ModelUnavailable as exc:  # no version yet, or the registry is not up yet
            self.waiting = str(exc)
            logger.warning("%s: serving 'no-model', looking again in %.0f s", exc,
                           self.args.model_poll_s)  # fmt: skip
            return
        self.waiting = None
        window = DriftWindow(reference, self.args.drift_window) if reference else None
        self.loaded = (pre, version, window, members)

    async def _maybe_load(self) -> None:
        if self.loaded is None and time.monotonic() - self.looked >= self.args.model_poll_s:
            await asyncio.to_thread(self._load)

    async def check_health(self) -> None:
        await self._maybe_load()

    async def info(self) -> dict[str, Any]:
        await self._maybe_load()
        loaded = self.loaded
        return {"model_version": loaded[1] if loaded else None,
                "members": loaded[3] if loaded else None, "waiting": self.waiting}  # fmt: skip

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

        self.args = ServeConfig(**args)
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

    def _load(self, version: str) -> Scorer:
        with fetch_bundle(self.args, version) as (bundle, _):
            return Scorer.from_bundle(bundle)  # weights read whole: the folder can go

    async def _model(self, version: str) -> Any:
        if version not in self.models:
            model = await asyncio.to_thread(self._load, version)
            while len(self.models) >= self.KEEP:
                self.models.pop(next(iter(self.models)))
            self.models[version] = model
        return self.models[version]

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.0)
    async def __call__(self, batch: list[Encoded]) -> list[Scored]:
        out: list[Scored] = [([], [], "")] * len(batch)
        # Normally one version per batch; grouped so a mixed batch still scores each correctly.
        for version in dict.fromkeys(v for _, _, v in batch):
            index = [i for i, item in enumerate(batch) if item[2] == version]
            scorer = await self._model(version)
            sizes = [len(batch[i][0]) for i in index]
            x_cat = np.concatenate([batch[i][0] for i in index])
            x_num = np.concatenate([batch[i][1] for i in index])
            prob, spread = scorer.score_encoded(x_cat, x_num)  # an ensemble: one stacked pass
            bounds = np.cumsum([0, *sizes])
            for i, (a, b) in zip(index, itertools.pairwise(bounds), strict=True):
                out[i] = (prob[a:b].tolist(), spread[a:b].tolist(), version)
        return out


@dataclass
class _GraphScoring:
    """This ingress replica's view of the graph: preprocessing chained into the model."""

    preprocess: DeploymentHandle
    model: DeploymentHandle
    model_version: str | None = None
    members: int | None = None  # of the version Preprocess loaded (/health)
    waiting: str | None = None  # why Preprocess has no model yet (/health's detail)
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

    async def score(self, columns: dict[str, list[Any]]) -> Scored | None:
        # Awaiting here and passing the arrays on measured faster than handing the pending
        # preprocessing response to the model (p50 11.0 vs 11.8 ms before HAProxy).
        try:
            encoded = await self.preprocess.remote(columns)
            if encoded is None:
                self.model_version = None
                return None
            result: Scored = await self.model.remote(encoded)
        except LOST as exc:
            # A replica died with this request on it (Serve routes new ones to its
            # replacement): 503 + Retry-After, not a 500.
            raise Unavailable(f"a serving replica was lost mid-request ({type(exc).__name__}); "
                              "retry") from exc  # fmt: skip
        self.model_version = result[2]
        self.scores.extend(result[0])
        return result

    async def ready(self) -> bool:
        try:
            info = await asyncio.wait_for(self.preprocess.info.remote(), timeout=2.0)
            await asyncio.wait_for(self.model.info.remote(), timeout=2.0)
        except Exception:
            return False
        self.model_version, self.members = info["model_version"], info.get("members")
        self.waiting = info.get("waiting")
        return True


# One ingress replica per process: its __init__ fills this in for the module-level app.
_replica: dict[str, Any] = {
    "scoring": None,
    "max_records": 1000,
    "waiting_for": None,
    "max_body_bytes": MAX_BODY_BYTES,
    "body_timeout_s": BODY_TIMEOUT_S,
    "abstain_above": None,
    "keys": (),
    "log": None,
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


def _body_timeout_s() -> float:
    return float(_replica["body_timeout_s"])


def _abstain_above() -> float | None:
    above: float | None = _replica["abstain_above"]
    return above


def _waiting_for() -> str | None:
    waiting: str | None = _replica["waiting_for"]
    return waiting


def _keys() -> tuple[bytes, ...]:
    keys: tuple[bytes, ...] = _replica["keys"]
    return keys


def _log() -> PredictionLog | None:
    log: PredictionLog | None = _replica["log"]
    return log


def _configure_replica(scoring: _GraphScoring, args: ServeConfig) -> PredictionLog | None:
    # Called from Api.__init__, whose class Serve pickles by value (its globals are copies).
    # The replica's start is an edge: its environment is read here, once.
    settings = Settings()
    keys = settings.keys()
    # Before anything else: a replica that would serve /predict to anyone refuses to start.
    anonymous = check_keys(keys, args.allow_anonymous)
    root = settings.prediction_log_location(args.prediction_log.location)
    log = None
    if root is not None:
        replica = serve.get_replica_context().replica_id.unique_id
        log = PredictionLog(root, args.prediction_log, writer=f"{replica}-{uuid.uuid4().hex[:6]}")
    _replica.update(
        scoring=scoring,
        max_records=args.max_records,
        waiting_for=args.model_uri or "",
        max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout_s,
        abstain_above=args.abstain_above,
        keys=keys,
        log=log,
    )
    if anonymous:
        logger.warning(anonymous)
    return log


async def _drift() -> dict[str, Any] | None:
    scoring = _scoring()
    return await scoring.drift() if scoring else None


app = create_api(
    _scoring,
    _max_records,
    _waiting_for,
    _max_body_bytes,
    _keys,
    drift=_drift,
    log=_log,
    body_timeout_s=_body_timeout_s,
    abstain_above=_abstain_above,
)


@serve.deployment(
    max_ongoing_requests=API_MAX_ONGOING,
    max_queued_requests=API_MAX_QUEUED,
    ray_actor_options={"num_cpus": 0.5},
)
@serve.ingress(app)
class Api:
    """FastAPI ingress (/health, /metrics, /predict, /feedback, /docs); it writes the
    prediction log of what it answered."""

    def __init__(self, preprocess: DeploymentHandle, model: DeploymentHandle, args: dict) -> None:
        parsed = ServeConfig(**args)
        scores: deque[float] = deque(maxlen=parsed.drift_window)
        self.log = _configure_replica(_GraphScoring(preprocess, model, scores=scores), parsed)

    def __del__(self) -> None:
        # Serve calls this when it stops the replica (a scale-down, a new config, shutdown):
        # what the log still buffers is written first.
        if self.log is not None:
            self.log.close()


def build_app(args: dict[str, Any]) -> Any:
    """Serve application builder (`import_path: ray_app.serving.graph:build_app`).

    A registry alias is resolved here, once: every replica then loads the same pinned version
    (`models:/adult-income/3`), even if the alias moves while replicas start or restart. On a
    fresh registry (no version behind the alias yet) the app still deploys and answers
    /health with status "no-model" and /predict with 503, until the first version appears.
    """
    serve_args = ServeConfig(**args)
    pinned = VersionPin()
    if serve_args.bundle_dir:
        pinned.model_version = "local"
    elif serve_args.model_uri:
        try:
            pinned.model_version = pin(serve_args.model_uri, serve_args.tracking_uri)[1]
        except ModelUnavailable as exc:  # the replicas look again every model_poll_s
            logger.warning("%s: deploying without a model (status 'no-model')", exc)
    # The pin is user_config, not an init argument: a config that changes only the version
    # (deploy, rollback) reconfigures the live replicas instead of replacing them.
    parsed, user_config = serve_args.model_dump(), pinned.model_dump()
    preprocess = Preprocess.options(user_config=user_config).bind(parsed)  # type: ignore[attr-defined]
    model = Model.options(user_config=user_config).bind(parsed)  # type: ignore[attr-defined]
    return Api.bind(preprocess, model, parsed)  # type: ignore[attr-defined]
