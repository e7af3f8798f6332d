"""Small raw-ASGI helpers: read a JSON body, send JSON, common Anthropic response headers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.types import Receive, Send

from app.devtools.fake_upstream.errors import ApiError
from app.devtools.fake_upstream.reply import new_id

Headers = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")
_RATE_LIMITS = (
    (b"anthropic-ratelimit-requests-limit", b"4000"),
    (b"anthropic-ratelimit-requests-remaining", b"3999"),
    (b"anthropic-ratelimit-tokens-limit", b"2000000"),
    (b"anthropic-ratelimit-tokens-remaining", b"2000000"),
    (b"anthropic-ratelimit-input-tokens-limit", b"2000000"),
    (b"anthropic-ratelimit-input-tokens-remaining", b"2000000"),
    (b"anthropic-ratelimit-output-tokens-limit", b"400000"),
    (b"anthropic-ratelimit-output-tokens-remaining", b"400000"),
)
_RESET_NAMES = (
    b"anthropic-ratelimit-requests-reset",
    b"anthropic-ratelimit-tokens-reset",
    b"anthropic-ratelimit-input-tokens-reset",
    b"anthropic-ratelimit-output-tokens-reset",
)
_reset_cache: tuple[int, Headers] = (0, [])


def _reset_headers() -> Headers:
    """Return the `*-reset` headers (a minute from now), recomputed at most once a second."""
    global _reset_cache
    second = int(time.time())
    if _reset_cache[0] != second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second + 60)).encode()
        _reset_cache = (second, [(name, stamp) for name in _RESET_NAMES])
    return _reset_cache[1]


def new_request_id() -> str:
    """Return a fresh `req_...` id."""
    return new_id("req_")


def common_headers(request_id: str) -> Headers:
    """Return the headers every Messages API response carries."""
    return [(b"request-id", request_id.encode()), *_RATE_LIMITS, *_reset_headers()]


async def read_body(receive: Receive) -> bytes:
    """Read the whole request body."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """Send a complete response with a content-length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, data: Any, headers: Headers | None = None) -> None:
    """Send `data` as a JSON response."""
    await send_bytes(send, status, orjson.dumps(data), [_JSON, *(headers or [])])


async def send_error(send: Send, error: ApiError, request_id: str | None = None) -> None:
    """Send an Anthropic-shaped error response."""
    request_id = request_id or new_request_id()
    headers = [_JSON, *common_headers(request_id), *error.headers()]
    await send_bytes(send, error.status, error.body(request_id), headers)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ClientWatch:
    """Notices the client going away, and sleeps that end early when it does."""

    def __init__(self, receive: Receive) -> None:
        self._gone = asyncio.ensure_future(receive())
        self._gone.add_done_callback(self._on_gone)
        self._waiter: asyncio.Future[None] | None = None

    @property
    def gone(self) -> bool:
        """Whether the client disconnected (or the response completed)."""
        return self._gone.done()

    def _on_gone(self, _: object) -> None:
        if self._waiter is not None:
            _wake(self._waiter)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return False if the client went away meanwhile."""
        if self._gone.done():
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(seconds, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return not self._gone.done()

    def close(self) -> None:
        """Stop watching."""
        self._gone.cancel()
