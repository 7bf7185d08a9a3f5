"""Load for the serving tests: clients posting one record back to back, every answer kept."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from .samples import RECORD


class Load:
    """`concurrency` clients posting `body` to /predict back to back (in a thread, for the
    duration of a `with`); every answer kept as (sent, answered, status, model_version or
    error). An async client: enough for correctness at concurrency 16, not for throughput
    (that is wrk's job in benchmarks/)."""

    def __init__(self, url: str, concurrency: int = 16, body: object = RECORD,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.url, self.concurrency, self.body = url, concurrency, body
        self.headers = headers or {}
        self.results: list[tuple[float, float, int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=60,
                                     limits=limits) as client:  # fmt: skip
            await asyncio.gather(*(self._client(client) for _ in range(self.concurrency)))

    async def _client(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                response = await client.post("/predict", json=self.body)
                status = response.status_code
                version = response.json()["model_version"] if status == 200 else response.text
            except httpx.HTTPError as exc:
                status, version = 0, type(exc).__name__
            self.results.append((sent, time.monotonic(), status, version))

    def __enter__(self) -> Load:
        self.thread.start()
        deadline = time.monotonic() + 30
        while len(self.results) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.results) >= 50, f"the load never got going: {self.results[-5:]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(90)

    def wait_steady_after(self, when: float, limit_s: float = 120) -> None:
        """Until, after `when`, more than 100 answers came and the last 50 were all 200 (or
        `limit_s` passed: the caller's assertions then say what went wrong)."""
        deadline = when + limit_s
        while time.monotonic() < deadline:
            after = [r for r in self.results if r[0] > when]
            if len(after) > 100 and all(r[2] == 200 for r in after[-50:]):
                return
            time.sleep(0.5)

    def in_flight_at(self, when: float) -> int:
        """Requests sent before `when` and answered after it."""
        return sum(1 for sent, answered, _, _ in self.results if sent <= when <= answered)

    def first_success_after(self, when: float) -> float:
        """When the first request sent after `when` was answered 200 (monotonic)."""
        return min(answered for sent, answered, status, _ in self.results
                   if sent > when and status == 200)  # fmt: skip
