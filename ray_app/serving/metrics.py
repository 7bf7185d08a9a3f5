"""Prometheus metrics of one API process (each replica exports its own), and the middleware
that counts and times every request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.spread = Histogram(
            "adult_prediction_spread", "ensemble members' spread per record",
            registry=self.registry, buckets=(0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5),
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


_ROUTES = {"/health", "/metrics", "/predict", "/feedback", "/docs", "/redoc", "/openapi.json"}


class MeasureMiddleware:
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
