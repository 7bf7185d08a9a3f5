"""What runs before FastAPI reads a /predict body: the API key (401) and the body limit
(413), so a stranger or a huge body costs next to nothing."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

# A refused body is read on (and dropped) up to this much, so the client gets its 413 rather
# than a reset connection mid-upload; beyond it the connection is closed.
DRAIN_BYTES = 64 * 1024 * 1024

GUARDED = frozenset({"/predict", "/feedback"})
NO_KEY = "missing or wrong API key: send the header 'Authorization: Bearer <key>'"


class GuardMiddleware:
    """POST /predict and /feedback, before FastAPI reads or parses anything: the API key
    (401), then the body size (413), from Content-Length when sent, else counted as the body
    streams in (chunked), so a huge body is never held. /health, /metrics and /docs stay
    open."""

    def __init__(self, app: Any, keys: Callable[[], tuple[bytes, ...]],
                 max_body_bytes: Callable[[], int]) -> None:  # fmt: skip
        self.app, self.max_body_bytes = app, max_body_bytes
        self.read_keys = keys
        self.keys_read: tuple[bytes, ...] | None = None  # read on the first request, not each

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in GUARDED:
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
