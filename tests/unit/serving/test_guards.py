"""The guard in front of /predict: under a root path, and against slow clients (a real uvicorn
on a real socket: what a trickling client does cannot be shown through the TestClient)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from ray_app.core.config import FeatureConfig, ModelConfig
from ray_app.ml.bundle import build_model
from ray_app.ml.features import Preprocessor
from ray_app.ml.scoring import Scorer
from ray_app.serving.api import create_api
from ray_app.serving.guards import NO_KEY
from ray_app.serving.plain import LocalScoring
from tests.support.procs import free_port
from tests.support.samples import RECORD

KEY = "k-1"  # pragma: allowlist secret (a test key)
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def scoring(small_splits):
    pre = Preprocessor.fit(small_splits.train, FeatureConfig())
    return LocalScoring(Scorer(pre, build_model(ModelConfig(), pre.cardinalities).eval()), "7")


def test_the_key_and_the_body_limit_hold_under_a_root_path(scoring):
    """Serve under a route_prefix of /adult keeps the full path in scope["path"] and puts the
    prefix in scope["root_path"] (ray serve/_private/replica.py, 2.60); Starlette routes on
    the path with the root path removed. The guard must follow the routing, not the raw path."""
    app = create_api(lambda: scoring, lambda: 5, max_body_bytes=lambda: 4096,
                     keys=lambda: (KEY.encode(),))  # fmt: skip

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, root_path="/adult")
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            padded = b"[" + b" " * 6000 + b"]"
            sized = {**AUTH, "content-type": "application/json"}
            return [
                await http.post("/adult/predict", json=RECORD),  # no key
                await http.post("/adult/predict", json=RECORD, headers=AUTH),
                await http.post("/adult/predict", content=padded, headers=sized),
                await http.post("/adult/feedback", json={"labels": []}),  # no key
                await http.get("/adult/health"),
            ]

    anonymous, keyed, huge, feedback, health = asyncio.run(calls())
    assert anonymous.status_code == 401 and anonymous.json() == {"detail": [NO_KEY]}
    assert keyed.status_code == 200 and keyed.json()["model_version"] == "7"  # it is /predict
    assert huge.status_code == 413
    assert feedback.status_code == 401
    assert health.status_code == 200


@pytest.fixture(scope="module")
def server(scoring):
    """A real uvicorn serving the API, with a 1 s body deadline."""
    app = create_api(lambda: scoring, lambda: 5, keys=lambda: (KEY.encode(),),
                     body_timeout_s=lambda: 1.0)  # fmt: skip
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(10)


def _trickle(port: int, headers: str, limit_s: float = 6.0) -> tuple[float | None, bytes, bool]:
    """POST /predict announcing a 2,000-byte body and sending one byte of it every 0.1 s.
    Returns when the first byte of an answer came (s after the headers; None: never), the
    answer, and whether the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.1)
    head = (f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: 2000\r\n{headers}\r\n")  # fmt: skip
    sock.sendall(head.encode() + b"[")
    start, first, got, closed = time.monotonic(), None, b"", False
    try:
        while time.monotonic() - start < limit_s:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b" ")
                except OSError:  # reset by the server after its answer
                    closed = True
                    break
                continue
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            first = first if first is not None else time.monotonic() - start
            got += data
    finally:
        sock.close()
    return first, got, closed


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_a_client_without_a_key_is_answered_at_once_and_cut_off(server):
    """Before: the 401 came only once the client had sent its whole body (here: never)."""
    first, answer, closed = _trickle(server, "")
    assert _status(answer) == 401 and NO_KEY.encode() in answer
    assert first is not None and first < 0.5, first
    assert closed


def test_trickling_clients_are_cut_off_at_the_deadline_and_others_are_served(server):
    """Four keyed clients trickle their bodies: each gets a 408 about 1 s (the body
    deadline) after it started, and the connection is closed; meanwhile whole requests are
    answered as usual."""
    with ThreadPoolExecutor(4) as pool:
        tricklers = [pool.submit(_trickle, server, f"Authorization: Bearer {KEY}\r\n")
                     for _ in range(4)]  # fmt: skip
        answers, took = [], []
        while not all(t.done() for t in tricklers):
            sent = time.monotonic()
            answers.append(httpx.post(f"http://127.0.0.1:{server}/predict", json=RECORD,
                                      headers=AUTH, timeout=5).status_code)  # fmt: skip
            took.append(time.monotonic() - sent)
            time.sleep(0.05)
        outcomes = [t.result() for t in tricklers]
    for first, answer, closed in outcomes:
        assert _status(answer) == 408 and b"not received within 1 s" in answer, answer
        assert first is not None and 0.9 <= first < 3.0, first
        assert closed
    assert len(answers) >= 5 and set(answers) == {200}, answers
    assert max(took) < 1.0, took
