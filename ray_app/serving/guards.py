"""What runs before FastAPI reads a /predict body: the API key (401), the body limit (413)
and the body deadline (408), so a stranger, a huge body or a slow client costs next to
nothing."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.routing import Match

from ray_app.core.errors import UserError

# A body over the limit is read on (and dropped) up to this much, within the body deadline,
# so an honest client gets its 413 rather than a reset connection mid-upload.
DRAIN_BYTES = 64 * 1024 * 1024

GUARDED = frozenset({"/predict", "/feedback"})
NO_KEY = "missing or wrong API key: send the header 'Authorization: Bearer <key>'"
TOO_SLOW = "body: not received within {:g} s; send the whole body at once"
NO_KEYS = (
    "RAY_APP_API_KEY is not set and the Serve config's args say allow_anonymous: false: "
    "refusing to serve /predict to anyone who reaches the port; set RAY_APP_API_KEY (on "
    "Kubernetes the Secret ray-app-api-key, key 'keys') or allow_anonymous: true"
)
ANONYMOUS = (
    "RAY_APP_API_KEY is not set (allow_anonymous): /predict answers anyone who reaches the port"
)


class AnonymousRefused(UserError):
    """An API about to start with no key, where nothing said anonymous access is meant."""


def check_keys(keys: tuple[bytes, ...], allow_anonymous: bool) -> str | None:
    """Refuse (AnonymousRefused, one line) an API with no key unless `allow_anonymous`; with
    no key and anonymous allowed, the warning line to log. A cluster whose key Secret is
    missing or empty then serves nothing, instead of an open /predict and one warning."""
    if keys:
        return None
    if not allow_anonymous:
        raise AnonymousRefused(NO_KEYS)
    return ANONYMOUS


class GuardMiddleware:
    """POST /predict and /feedback, before FastAPI reads or parses anything: the API key
    (401, answered at once, the connection closed: nothing of the body is read), then the
    body size (413), from Content-Length when sent, else counted as the body streams in
    (chunked), so a huge body is never held; the whole body must arrive within
    `body_timeout_s` of the request (408 and closed), so a client trickling its body cannot
    hold one of the replica's request slots for longer. /health, /metrics and /docs stay
    open.

    Which requests are guarded is decided by the app's own routes (`router`), on the path
    they dispatch on: under a root path (a Serve `route_prefix` other than `/`: Serve keeps
    the full path in scope["path"] and puts the prefix in scope["root_path"], ray
    serve/_private/replica.py, ASGI wrapper of 2.60), `POST /adult/predict` is /predict."""

    def __init__(self, app: Any, keys: Callable[[], tuple[bytes, ...]],
                 max_body_bytes: Callable[[], int], body_timeout_s: Callable[[], float],
                 router: Any) -> None:  # fmt: skip
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s
        self.read_keys, self.router = keys, router
        self.keys_read: tuple[bytes, ...] | None = None  # read on the first request, not each

    def guarded(self, scope: Any) -> bool:
        """Whether the route this request reaches is a guarded one (a method mismatch
        counts: a 405 is no reason to skip the key)."""
        routes = (r for r in self.router.routes if getattr(r, "path", None) in GUARDED)
        return any(route.matches(scope)[0] is not Match.NONE for route in routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.guarded(scope):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        headers = dict(scope.get("headers") or ())
        if self.keys_read is None:
            self.keys_read = self.read_keys()
        keys = self.keys_read
        if keys and not _authorized(headers.get(b"authorization", b""), keys):
            await _answer(send, 401, NO_KEY, {"www-authenticate": "Bearer"})
            return
        limit, timeout = self.max_body_bytes(), self.body_timeout_s()
        deadline = started + timeout
        length = headers.get(b"content-length", b"")
        too_big = f"body: over {limit} bytes; at most {limit} per request"
        if length.isdigit() and int(length) > limit:
            await _drain(receive, 0, deadline)
            await _answer(send, 413, too_big)
            return
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                await _answer(send, 408, TOO_SLOW.format(timeout))
                return
            if message["type"] == "http.disconnect":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                if more:
                    await _drain(receive, size, deadline)
                await _answer(send, 413, too_big)
                return
            chunks.append(chunk)
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


async def _drain(receive: Any, drained: int, deadline: float) -> None:
    """Read the rest of a refused body and drop it, up to DRAIN_BYTES and `deadline`."""
    while drained < DRAIN_BYTES:
        try:
            incoming = await asyncio.wait_for(receive(), deadline - time.monotonic())
        except TimeoutError:
            return
        if incoming["type"] != "http.request":
            return
        drained += len(incoming.get("body", b""))
        if not incoming.get("more_body", False):
            return


async def _answer(send: Any, status: int, message: str,
                  extra: dict[str, str] | None = None) -> None:  # fmt: skip
    """Answer `status` with the API's error body and close the connection (`Connection:
    close`: whatever of the body is still on its way is not read)."""
    payload = json.dumps({"detail": [message]}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), (b"connection", b"close"),
               *((k.encode(), v.encode()) for k, v in (extra or {}).items())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
