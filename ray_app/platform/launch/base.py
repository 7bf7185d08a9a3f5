"""The launcher interface: run a training job somewhere and get its JSON result; serve a
registered version there. One polling helper and one timeout policy for every backend."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from ray_app.core.errors import UserError

JobKind = Literal["train", "tune"]
LOG_TAIL = 4000
# A job's wait when nothing bounds it (no activeDeadlineSeconds, no configured timeout).
NO_DEADLINE_S = 4 * 3600.0
Log = Callable[[str], None]
HttpGet = Callable[[str], dict[str, Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """`ray-app <kind> --json <args>` under a name unique to this launch (a RayJob's name)."""

    kind: JobKind
    args: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class JobOutcome:
    name: str
    status: str
    logs: str
    result: dict[str, Any]


class JobFailed(UserError):
    """A Ray job ended in anything but success (message carries status and a log tail)."""


class Launcher(Protocol):
    """Where the pipeline's (and the monitor's retrain) Ray work runs."""

    def run(self, job: Job) -> JobOutcome:
        """Run the job to its end; its result, or JobFailed with the status and a log tail."""
        ...

    def deploy(self, version: str | None) -> dict[str, Any]:
        """Serve `version` of the registered model in place (None: the champion alias,
        resolved by the app itself); returns once it answers."""
        ...


def job_name(kind: JobKind, suffix: str | None = None) -> str:
    """A launched job's name: unique per run, a valid RayJob name (DNS-1035, <= 47)."""
    import uuid

    return f"ray-app-{kind}-{suffix or uuid.uuid4().hex[:8]}"


def parse_result(logs: str) -> dict[str, Any]:
    """The `--json` result line: the last line of the job's output that is a JSON object."""
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    raise JobFailed("the job succeeded but printed no JSON result line")


def failure(what: str, status: str, message: str, logs: str) -> JobFailed:
    """JobFailed naming what failed, its status and message, and the tail of its logs."""
    tail = logs[-LOG_TAIL:] if logs else "(no logs)"
    header = f"{what}: {status}: {message or 'no message'}"
    return JobFailed(f"{header}\n--- job logs (tail) ---\n{tail}")


@dataclass
class Poller:
    """The one polling policy: ask `check` every `interval_s` until it returns a value, for at
    most `timeout_s` (then `on_timeout` says why); a clock and a sleep that tests can fake."""

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def until(
        self, check: Callable[[], T | None], timeout_s: float, on_timeout: Callable[[], Exception]
    ) -> T:
        deadline = self.clock() + timeout_s
        while True:
            found = check()
            if found is not None:
                return found
            if self.clock() >= deadline:
                raise on_timeout()
            self.sleep(self.interval_s)


def http_get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read() or b"{}")
        return body


def served_version(get: HttpGet, url: str) -> str | None:
    """The model version the Serve app's /health names (None: not answering or no model)."""
    try:
        version = get(url.rstrip("/") + "/health").get("model_version")
    except (OSError, ValueError):
        return None
    return None if version is None else str(version)


class Terminated(BaseException):
    """SIGTERM reached a step (its pod deleted, its run cancelled, its node drained): unwinds
    like Ctrl-C, so the launcher deletes (or keeps, per `cleanup`) what it started."""


@contextlib.contextmanager
def terminated_as_exception() -> Iterator[None]:
    """Inside: SIGTERM raises Terminated in the main thread (Python's default would end the
    process without running a single `finally`)."""

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
