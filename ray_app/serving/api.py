"""The HTTP API (FastAPI): /predict, /feedback, /health, /metrics, /docs.

Shared by the Ray Serve ingress (`ray_app.serving.graph`) and the plain single-process server
(`ray_app.serving.plain`), so both validate and answer identically; only the scoring backend
differs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_app.core.config import BODY_TIMEOUT_S, MAX_BODY_BYTES
from ray_app.core.schema import FEATURE_COLUMNS, label_name
from ray_app.serving.guards import GuardMiddleware
from ray_app.serving.metrics import ApiMetrics, MeasureMiddleware
from ray_app.serving.predlog import PredictionLog
from ray_app.serving.schemas import (
    FEEDBACK_ERRORS,
    PREDICT_ERRORS,
    RETRY,
    FeedbackResponse,
    Health,
    Label,
    PredictResponse,
    Record,
    Unavailable,
    branch_errors,
    client_error,
    describe_errors,
    invalid_body,
    jsonable,
)

# What a backend's scoring returns: P(>50K) per record, the ensemble members' spread per
# record (0 for a single model), and the version that computed them.
Scored = tuple[list[float], list[float], str]


class Scoring(Protocol):
    """What the API needs from a model: its version, readiness, and batch scoring."""

    @property
    def model_version(self) -> str | None:
        """None: the graph is up but no model is registered yet (a fresh registry)."""
        ...

    @property
    def members(self) -> int | None:
        """How many models the version averages (a deep ensemble: K); None: not known yet."""
        ...

    async def score(self, columns: dict[str, list[Any]]) -> Scored | None:
        """Probabilities, spreads and the version that computed them; None while there is no
        model."""
        ...

    async def ready(self) -> bool: ...


NO_MODEL = (
    "no model is registered yet ({uri} names no version): train one (ray-app train, or the "
    "train RayJob); it is served as soon as it is registered"
)


@dataclass
class Backend:
    """What the API asks of the process it runs in, each read when needed: the scoring
    backend (None until loaded), the record limit, the model URI a 'no-model' answer waits
    for, the body limit, the API keys (none: open), and the drift gauges' values (None: not
    yet)."""

    scoring: Callable[[], Scoring | None]
    max_records: Callable[[], int]
    waiting_for: Callable[[], str | None] = lambda: None
    max_body_bytes: Callable[[], int] = lambda: MAX_BODY_BYTES
    keys: Callable[[], tuple[bytes, ...]] = tuple
    drift: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
    log: Callable[[], PredictionLog | None] = lambda: None
    body_timeout_s: Callable[[], float] = lambda: BODY_TIMEOUT_S
    abstain_above: Callable[[], float | None] = lambda: None

    def no_model(self) -> str:
        """What a 'no-model' answer says: what the app waits for and, when the backend knows,
        why there is no model yet (no version registered, or the registry not reachable)."""
        text = NO_MODEL.format(uri=self.waiting_for() or "the model URI")
        scoring = self.scoring()
        reason = getattr(scoring, "waiting", None) if scoring is not None else None
        if reason and "no model version is registered" not in reason:
            text += f" (now: {reason})"
        return text


def create_api(
    get_scoring: Callable[[], Scoring | None],
    max_records: Callable[[], int],
    waiting_for: Callable[[], str | None] = lambda: None,
    max_body_bytes: Callable[[], int] = lambda: MAX_BODY_BYTES,
    keys: Callable[[], tuple[bytes, ...]] = tuple,
    drift: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    log: Callable[[], PredictionLog | None] = lambda: None,
    body_timeout_s: Callable[[], float] = lambda: BODY_TIMEOUT_S,
    abstain_above: Callable[[], float | None] = lambda: None,
) -> FastAPI:
    """The FastAPI app over a scoring backend (`Backend` says what each argument is)."""
    backend = Backend(get_scoring, max_records, waiting_for, max_body_bytes, keys, drift, log,
                      body_timeout_s, abstain_above)  # fmt: skip
    app = FastAPI(
        title="Adult income API",
        description="P(income > 50K) for UCI Adult records. Unknown categories are rejected.",
        docs_url=None,  # /docs and /redoc below: their scripts served here, not from a CDN
        redoc_url=None,
    )
    _offline_docs(app)
    registry: dict[str, ApiMetrics] = {}

    def metrics() -> ApiMetrics:
        """This process's metrics, for the version it serves (a new version: new series)."""
        scoring = backend.scoring()
        version = (scoring.model_version if scoring else None) or "none"
        if version not in registry:
            registry.clear()
            registry[version] = ApiMetrics(version)
        return registry[version]

    _error_handlers(app)
    # Added first, so it runs inside the measuring middleware: 401s and 413s are counted.
    app.add_middleware(GuardMiddleware, keys=keys, max_body_bytes=max_body_bytes,
                       body_timeout_s=body_timeout_s, router=app.router)  # fmt: skip
    app.add_middleware(MeasureMiddleware, metrics=metrics)
    _health_and_metrics(app, backend, metrics)
    _predict(app, backend, metrics)
    _feedback(app, backend)
    app.openapi = lambda: _openapi(app, backend)  # type: ignore[method-assign]
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = branch_errors(list(exc.errors()), exc.body)
        return JSONResponse(status_code=422, content={"detail": describe_errors(errors),
                                                      "errors": jsonable(errors)})  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8) with 400 and a string detail:
        # to the client that is one more invalid body, so it gets the documented 422.
        if exc.status_code == 400 and request.url.path in ("/predict", "/feedback"):
            return invalid_body("could not be parsed as JSON (UTF-8)", "json_invalid")
        return JSONResponse(status_code=exc.status_code, content={"detail": [str(exc.detail)]},
                            headers=exc.headers)  # fmt: skip


def _health_and_metrics(app: FastAPI, backend: Backend,
                        metrics: Callable[[], ApiMetrics]) -> None:  # fmt: skip
    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """200 when the graph answers: status 'ready' with the model version, or 'no-model'
        on a fresh registry (/predict then answers 503); 503 'loading' otherwise."""
        scoring = backend.scoring()
        if scoring is None or not await scoring.ready():
            loading = {"status": "loading", "model_version": None}
            return JSONResponse(status_code=503, content=loading)
        if scoring.model_version is None:
            return JSONResponse({"status": "no-model", "model_version": None,
                                 "detail": backend.no_model()})  # fmt: skip
        return JSONResponse({"status": "ready", "model_version": scoring.model_version,
                             "ensemble_members": scoring.members})  # fmt: skip

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus text format (version 0.0.4)."""
        m = metrics()
        found = await backend.drift() if backend.drift else None
        if found:
            m.set_drift(found)
        log = backend.log()
        text = m.render() + (log.render() if log else b"")
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _columns(records: list[Any]) -> dict[str, list[Any]]:
    """Validated records -> one list per feature ('?' is a missing value)."""
    columns: dict[str, list[Any]] = {c: [] for c in FEATURE_COLUMNS}
    for item in records:
        for column, value in item:  # pydantic models iterate as (field, value)
            columns[column].append(None if value == "?" else value)
    return columns


# A client's X-Request-ID (Serve's proxy sets one when the client did not): kept as the prefix
# of every record's id, so its own logs, Serve's and the prediction log name the same request.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _request_prefix(request: Request) -> tuple[str | None, bool]:
    """(the request's id prefix, whether it was generated here); (None, False): invalid."""
    sent = request.headers.get("x-request-id")
    if sent is None:
        return uuid.uuid4().hex, True
    return (sent, False) if REQUEST_ID.match(sent) else (None, False)


def _predict(app: FastAPI, backend: Backend, metrics: Callable[[], ApiMetrics]) -> None:
    @app.post("/predict", response_model=PredictResponse, responses=PREDICT_ERRORS)
    async def predict(request: Request, body: Record | list[Record]) -> Any:  # type: ignore[valid-type]
        """Score one record or a list of records (the 14 Adult features by name). Each
        prediction carries a `request_id`: `<X-Request-ID>-<index>` (an id is generated when
        the header is absent) — the id /feedback takes a label for."""
        prefix, generated = _request_prefix(request)
        if prefix is None:
            return client_error(422, "header X-Request-ID: at most 128 characters of letters, "
                                     "digits and ._:@/+=-")  # fmt: skip
        scoring = backend.scoring()
        if scoring is None:
            return client_error(503, "model not loaded yet", RETRY)
        records = body if isinstance(body, list) else [body]
        if not records:
            return invalid_body("the list of records is empty", "too_short")
        limit = backend.max_records()
        if len(records) > limit:
            return invalid_body(f"{len(records)} records; at most {limit} per request",
                                "too_long")  # fmt: skip
        columns = _columns(records)
        try:
            scored = await scoring.score(columns)
        except Unavailable as exc:
            return client_error(503, str(exc), RETRY)
        if scored is None:
            return client_error(503, backend.no_model(), RETRY)
        probabilities, spreads, version = scored
        m = metrics()
        m.records.observe(len(records))
        ids = [f"{prefix}-{i}" for i in range(len(records))]
        labels = [label_name(p) for p in probabilities]
        above = backend.abstain_above()
        out = []
        for p, s, label, request_id in zip(probabilities, spreads, labels, ids, strict=True):
            m.spread.observe(s)
            answer = {"request_id": request_id, "probability": p, "spread": s, "label": label,
                      "model_version": version}  # fmt: skip
            if above is not None and s > above:  # the members disagree too much to say
                answer["label"] = None
                answer["abstained"] = ABSTAINED.format(s, above)
            m.predictions.labels(label=answer["label"] or "abstained").inc()
            out.append(answer)
        log = backend.log()
        if log is not None:
            log.add(columns, ids, probabilities, labels, version)
        # Built by hand and returned directly: the response model documents it, and skipping
        # FastAPI's re-validation of 1,000 predictions keeps big batches cheap.
        headers = {"X-Request-ID": prefix} if generated else None
        return JSONResponse({"model_version": version, "predictions": out}, headers=headers)


ABSTAINED = "the ensemble's members disagree: spread {:.3f} > abstain_above {:g}"

LOG_OFF = ("the prediction log is off (serve args prediction_log.location: off): labels "
           "would have no predictions to join")  # fmt: skip


def _feedback(app: FastAPI, backend: Backend) -> None:
    @app.post("/feedback", response_model=FeedbackResponse, responses=FEEDBACK_ERRORS)
    async def feedback(body: list[Label]) -> Any:
        """Labels that arrived after the prediction: `[{"request_id": ..., "income":
        ">50K"}]`, appended to the label log beside the prediction log. The monitor joins
        them by request id; ids it cannot find are counted in its report, not refused here
        (another replica, or an earlier window, may hold them)."""
        log = backend.log()
        if log is None:
            return client_error(409, LOG_OFF)
        if not body:
            return invalid_body("the list of labels is empty", "too_short")
        limit = FEEDBACK_MAX
        if len(body) > limit:
            return invalid_body(f"{len(body)} labels; at most {limit} per request", "too_long")
        log.add_labels([item.request_id for item in body], [item.income for item in body])
        return JSONResponse({"accepted": len(body)})


FEEDBACK_MAX = 10_000


def _openapi(app: FastAPI, backend: Backend) -> dict[str, Any]:
    """FastAPI's document plus what only the running process knows: the record limit
    (maxItems) and, when API keys are set, the bearer scheme /predict requires."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)  # fmt: skip
        body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]
        labels = doc["paths"]["/feedback"]["post"]["requestBody"]["content"]
        labels["application/json"]["schema"].update(minItems=1, maxItems=FEEDBACK_MAX)
        for branch in body["application/json"]["schema"]["anyOf"]:
            if branch.get("type") == "array":
                branch.update(minItems=1, maxItems=backend.max_records())
        if backend.keys():
            doc["components"]["securitySchemes"] = {"apiKey": {"type": "http",
                                                               "scheme": "bearer"}}  # fmt: skip
            for path in ("/predict", "/feedback"):
                doc["paths"][path]["post"]["security"] = [{"apiKey": []}]
        app.openapi_schema = doc
    return app.openapi_schema


DOCS_ASSETS = "/docs/assets"


def _offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served by this app, from
    the files fastapi-offline ships: FastAPI's own pages load them from cdn.jsdelivr.net,
    which an air-gapped cluster (or this CI) cannot reach, and then show a blank page."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = str(files("fastapi_offline") / "static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = f"{request.scope.get('root_path', '')}"
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = f"{request.scope.get('root_path', '')}"
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False,
        )  # fmt: skip
