"""The HTTP API (FastAPI): request/response models, validation errors, /health, /metrics.

Shared by the Ray Serve ingress (ray_app.serving.graph) and the plain single-process baseline
(benchmarks/plain_app.py), so both validate and answer identically; only the scoring
backend differs.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_app.data.files import CATEGORIES, FEATURE_COLUMNS, NULLABLE_COLUMNS, NUMERIC_COLUMNS

# Plausible bounds of the UCI Adult columns; outside them a request is a client error.
NUMERIC_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (0, 120),
    "fnlwgt": (0, 5_000_000),
    "education_num": (1, 16),
    "capital_gain": (0, 1_000_000),
    "capital_loss": (0, 100_000),
    "hours_per_week": (0, 168),
}


def _record_model() -> type[BaseModel]:
    """One record: typed numbers with ranges; categories from the UCI schema (adult.names).

    Unknown categories are rejected (422) rather than mapped to the OOV bucket: a typo would
    otherwise score as 'unknown' without anyone noticing. A category that is in the schema but
    was not seen in training still goes to the OOV bucket. Missing values (null or '?') only
    where the UCI data has them: workclass, occupation, native_country.
    """
    fields: dict[str, Any] = {}
    for column in FEATURE_COLUMNS:
        alias = AliasChoices(column, column.replace("_", "-"))
        if column in NUMERIC_COLUMNS:
            low, high = NUMERIC_BOUNDS[column]
            kind = Annotated[float, Field(ge=low, le=high, strict=True, validation_alias=alias)]
            fields[column] = (kind, ...)
        else:
            values: tuple[str, ...] = CATEGORIES[column]
            if column in NULLABLE_COLUMNS:
                nullable = Literal[(*values, "?")] | None  # type: ignore[valid-type]
                fields[column] = (Annotated[nullable, Field(validation_alias=alias)], None)
            else:
                required = Literal[values]  # type: ignore[valid-type]
                fields[column] = (Annotated[required, Field(validation_alias=alias)], ...)
    return create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)


Record = _record_model()


class Prediction(BaseModel):
    probability: float = Field(description="P(income > 50K)")
    label: Literal["<=50K", ">50K"]
    model_version: str


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    detail: list[str] = Field(description="what was wrong, one line each")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', then record index and field")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    """422: the same `detail` lines as every error, plus pydantic's structured errors."""

    errors: list[FieldError]


class Health(BaseModel):
    status: Literal["ready", "no-model", "loading"]
    model_version: str | None
    ensemble_members: int | None = Field(
        None, description="'ready': how many models the version averages (1: a single model)"
    )
    detail: str | None = Field(None, description="'no-model': what the app waits for")


# Serve's own backpressure answer (the Api deployment's max_queued_requests) is plain text.
BUSY = "Request dropped due to backpressure"
_BUSY_TEXT = {"text/plain": {"schema": {"type": "string", "example": BUSY}}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}  # fmt: skip
# Every answer /predict gives besides 200 (the API's own ErrorBody, one line per problem).
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "RAY_APP_API_KEY is set and no key of it was sent"},
    413: {"model": ErrorBody, "description": "body over max_body_bytes (before it is parsed)"},
    422: {"model": ValidationErrorBody,
          "description": "invalid JSON or record, empty list, or more than max_records"},
    503: {"model": ErrorBody, "headers": _RETRY_AFTER, "content": _BUSY_TEXT,
          "description": "no model registered yet, a replica restarting (JSON), or the server "
                         "busy (Serve's backpressure, text); retry after Retry-After seconds"},
}  # fmt: skip


class ApiMetrics:
    """Prometheus metrics of one API process (each replica exports its own)."""

    def __init__(self, model_version: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adult_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "adult_request_latency_seconds", "request latency", ["path"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.predictions = Counter(
            "adult_predictions", "predictions by class", ["label"], registry=self.registry
        )
        self.records = Histogram(
            "adult_records_per_request", "records per /predict", registry=self.registry,
            buckets=(1, 2, 8, 32, 128, 512, 1000, 5000),
        )  # fmt: skip
        info = Gauge("adult_model_info", "served model", ["model_version"], registry=self.registry)
        info.labels(model_version=model_version).set(1)
        # Drift against the training reference over the serving window (set at each scrape).
        self.feature_psi = Gauge("adult_feature_psi", "PSI of a feature vs training",
                                 ["feature"], registry=self.registry)  # fmt: skip
        self.score_psi = Gauge("adult_score_psi", "PSI of P(>50K) vs validation",
                               registry=self.registry)  # fmt: skip
        self.drift_rows = Gauge("adult_drift_window_rows", "rows in the drift window",
                                registry=self.registry)  # fmt: skip

    def set_drift(self, drift: dict[str, Any]) -> None:
        for feature, value in drift["feature_psi"].items():
            self.feature_psi.labels(feature=feature).set(value)
        if "score_psi" in drift:
            self.score_psi.set(drift["score_psi"])
        self.drift_rows.set(drift["rows"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _branch_errors(errors: list[Any], body: Any) -> list[Any]:
    """Keep the errors of the union branch the body took (one record or a list), tag dropped.

    The body is `Record | list[Record]`, so pydantic reports both branches, with locations
    like ('body', 'list[Record]', 3, 'age'); only the branch matching the body's JSON type
    helps the client.
    """
    branch = "list[Record]" if isinstance(body, list) else "Record"
    kept = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and loc[1] in ("Record", "list[Record]"):
            if loc[1] != branch:
                continue
            loc = [loc[0], *loc[2:]]
        kept.append({**error, "loc": tuple(loc)})
    return kept or errors


def _describe(errors: list[Any]) -> list[str]:
    """["record 3, field 'age': Input should be ..."] from pydantic's error list."""
    out = []
    for error in errors:
        loc = [p for p in error.get("loc", ()) if p != "body"]
        where = []
        if loc and isinstance(loc[0], int):
            where.append(f"record {loc.pop(0)}")
        if loc:
            where.append(f"field '{'.'.join(str(p) for p in loc)}'")
        out.append(f"{', '.join(where) or 'body'}: {error.get('msg')}")
    return out


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

    async def score(self, columns: dict[str, list[Any]]) -> tuple[list[float], str] | None:
        """Probabilities and the version that computed them; None while there is no model."""
        ...

    async def ready(self) -> bool: ...


API_KEY_ENV = "RAY_APP_API_KEY"  # pragma: allowlist secret (a variable name)
MAX_BODY_BYTES = 2 * 1024 * 1024
# A refused body is read on (and dropped) up to this much, so the client gets its 413 rather
# than a reset connection mid-upload; beyond it the connection is closed.
DRAIN_BYTES = 64 * 1024 * 1024


def api_keys() -> tuple[bytes, ...]:
    """The keys /predict accepts: RAY_APP_API_KEY, comma-separated (old and new while one is
    rotated); empty: /predict is open."""
    return tuple(
        k.strip().encode() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()
    )


NO_KEY = "missing or wrong API key: send the header 'Authorization: Bearer <key>'"
NO_MODEL = (
    "no model is registered yet ({uri} names no version): train one (ray-app train, or the "
    "train RayJob); it is served as soon as it is registered"
)


def create_api(
    get_scoring: Callable[[], Scoring | None],
    max_records: Callable[[], int],
    waiting_for: Callable[[], str | None] = lambda: None,
    max_body_bytes: Callable[[], int] = lambda: MAX_BODY_BYTES,
    keys: Callable[[], tuple[bytes, ...]] = api_keys,
    drift: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
) -> FastAPI:
    """The FastAPI app. `get_scoring` returns this process's backend (None until loaded);
    `waiting_for` names the model URI a 'no-model' answer waits for; `keys` are the API keys
    /predict requires (none: open); `max_body_bytes` bounds a /predict body before parsing;
    `drift` gives the PSI gauges' values at each /metrics scrape (None: not yet)."""
    registry: dict[str, ApiMetrics] = {}
    app = FastAPI(
        title="Adult income API",
        description="P(income > 50K) for UCI Adult records. Unknown categories are rejected.",
        docs_url=None,  # /docs and /redoc below: their scripts served here, not from a CDN
        redoc_url=None,
    )
    _offline_docs(app)

    def metrics() -> ApiMetrics:
        scoring = get_scoring()
        version = (scoring.model_version if scoring else None) or "none"
        if version not in registry:
            registry.clear()
            registry[version] = ApiMetrics(version)
        return registry[version]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _branch_errors(list(exc.errors()), exc.body)
        return JSONResponse(
            status_code=422, content={"detail": _describe(errors), "errors": _jsonable(errors)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8) with 400 and a string detail:
        # to the client that is one more invalid body, so it gets the documented 422.
        if exc.status_code == 400 and request.url.path == "/predict":
            return _invalid_body("could not be parsed as JSON (UTF-8)", "json_invalid")
        return JSONResponse(status_code=exc.status_code, content={"detail": [str(exc.detail)]},
                            headers=exc.headers)  # fmt: skip

    # Added first, so it runs inside the measuring middleware: 401s and 413s are counted.
    app.add_middleware(_GuardMiddleware, keys=keys, max_body_bytes=max_body_bytes)
    app.add_middleware(_MeasureMiddleware, metrics=metrics)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """200 when the graph answers: status 'ready' with the model version, or 'no-model'
        on a fresh registry (/predict then answers 503); 503 'loading' otherwise."""
        scoring = get_scoring()
        if scoring is None or not await scoring.ready():
            loading = {"status": "loading", "model_version": None}
            return JSONResponse(status_code=503, content=loading)
        if scoring.model_version is None:
            return JSONResponse(
                {"status": "no-model", "model_version": None,
                 "detail": NO_MODEL.format(uri=waiting_for() or "the model URI")}
            )  # fmt: skip
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
        found = await drift() if drift else None
        if found:
            m.set_drift(found)
        return PlainTextResponse(m.render(), media_type="text/plain; version=0.0.4")

    @app.post("/predict", response_model=PredictResponse, responses=PREDICT_ERRORS)
    async def predict(body: Record | list[Record]) -> Any:  # type: ignore[valid-type]
        """Score one record or a list of records (the 14 Adult features by name)."""
        scoring = get_scoring()
        if scoring is None:
            return _client_error(503, "model not loaded yet", RETRY)
        records = body if isinstance(body, list) else [body]
        if not records:
            return _invalid_body("the list of records is empty", "too_short")
        limit = max_records()
        if len(records) > limit:
            return _invalid_body(f"{len(records)} records; at most {limit} per request",
                                 "too_long")  # fmt: skip
        columns: dict[str, list[Any]] = {c: [] for c in FEATURE_COLUMNS}
        for item in records:
            for column, value in item:  # pydantic models iterate as (field, value)
                columns[column].append(None if value == "?" else value)
        try:
            scored = await scoring.score(columns)
        except Unavailable as exc:
            return _client_error(503, str(exc), RETRY)
        if scored is None:
            message = NO_MODEL.format(uri=waiting_for() or "the model URI")
            return _client_error(503, message, RETRY)
        probabilities, version = scored
        m = metrics()
        m.records.observe(len(records))
        out = []
        for p in probabilities:
            label = ">50K" if p >= 0.5 else "<=50K"
            m.predictions.labels(label=label).inc()
            out.append({"probability": p, "label": label, "model_version": version})
        # Built by hand and returned directly: the response model documents it, and skipping
        # FastAPI's re-validation of 1,000 predictions keeps big batches cheap.
        return JSONResponse({"model_version": version, "predictions": out})

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus what only the running process knows: the record limit
        (maxItems) and, when API keys are set, the bearer scheme /predict requires."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)  # fmt: skip
            body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]
            for branch in body["application/json"]["schema"]["anyOf"]:
                if branch.get("type") == "array":
                    branch.update(minItems=1, maxItems=max_records())
            if keys():
                doc["components"]["securitySchemes"] = {
                    "apiKey": {"type": "http", "scheme": "bearer"}
                }
                doc["paths"]["/predict"]["post"]["security"] = [{"apiKey": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


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


_ROUTES = {"/health", "/metrics", "/predict", "/docs", "/redoc", "/openapi.json"}


class _MeasureMiddleware:
    """Counts and times every HTTP request (plain ASGI: BaseHTTPMiddleware costs ~1 ms each)."""

    def __init__(self, app: Any, metrics: Callable[[], ApiMetrics]) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope.get("path", "")
            path = path if path in _ROUTES else "other"
            m = self.metrics()
            m.requests.labels(path=path, status=str(status["code"])).inc()
            m.latency.labels(path=path).observe(time.perf_counter() - start)


class _GuardMiddleware:
    """POST /predict, before FastAPI reads or parses anything: the API key (401), then the
    body size (413), from Content-Length when sent, else counted as the body streams in
    (chunked), so a huge body is never held. /health, /metrics and /docs stay open."""

    def __init__(self, app: Any, keys: Callable[[], tuple[bytes, ...]],
                 max_body_bytes: Callable[[], int]) -> None:  # fmt: skip
        self.app, self.max_body_bytes = app, max_body_bytes
        self.read_keys = keys
        self.keys_read: tuple[bytes, ...] | None = None  # read on the first request, not each

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/predict":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self.keys_read is None:
            self.keys_read = self.read_keys()
        keys = self.keys_read
        if keys and not _authorized(headers.get(b"authorization", b""), keys):
            await _refuse(send, receive, 401, NO_KEY, {"www-authenticate": "Bearer"})
            return
        limit = self.max_body_bytes()
        length = headers.get(b"content-length", b"")
        too_big = f"body: over {limit} bytes; at most {limit} per request"
        if length.isdigit() and int(length) > limit:
            await _refuse(send, receive, 413, too_big)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                more = message.get("more_body", False)
                await _refuse(send, receive, 413, too_big, drained=size if more else DRAIN_BYTES)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return body

        await self.app(scope, replay, send)


def _authorized(header: bytes, keys: tuple[bytes, ...]) -> bool:
    """`Bearer <key>` with one of `keys`; every key compared in constant time."""
    scheme, _, given = header.partition(b" ")
    matches = [hmac.compare_digest(given.strip(), key) for key in keys]
    return scheme.lower() == b"bearer" and any(matches)


async def _refuse(send: Any, receive: Any, status: int, message: str,
                  extra: dict[str, str] | None = None, drained: int = 0) -> None:  # fmt: skip
    """Answer `status` with the API's error body; read the rest of the request body and drop
    it (up to DRAIN_BYTES) so the client reads the answer instead of a reset connection.
    `drained`: bytes already read (DRAIN_BYTES: the body has ended, read nothing more)."""
    import json

    while drained < DRAIN_BYTES:
        incoming = await receive()
        if incoming["type"] != "http.request":
            break
        drained += len(incoming.get("body", b""))
        if not incoming.get("more_body", False):
            break
    payload = json.dumps({"detail": [message]}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()),
               *((k.encode(), v.encode()) for k, v in (extra or {}).items())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Unavailable(Exception):
    """A scoring backend that cannot answer now (a replica lost or restarting): 503."""


# Retry-After of the API's own 503s: a replica restarts, or a first model appears, in seconds.
RETRY = {"Retry-After": "1"}


def _client_error(status: int, message: str, headers: dict[str, str] | None = None
                  ) -> JSONResponse:  # fmt: skip
    return JSONResponse(status_code=status, content={"detail": [message]}, headers=headers)


def _invalid_body(message: str, kind: str) -> JSONResponse:
    """A 422 shaped as RequestValidationError's (detail lines and structured errors)."""
    error = {"loc": ["body"], "msg": message, "type": kind}
    return JSONResponse(status_code=422, content={"detail": [f"body: {message}"],
                                                  "errors": [error]})  # fmt: skip


def _jsonable(errors: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors]  # fmt: skip
