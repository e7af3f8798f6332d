"""The fake upstream as a raw ASGI app: Messages API routes plus `/_fake/*` admin routes.

Raw ASGI rather than Starlette routing because a benchmark pushes hundreds of concurrent
streams through it: a request costs one dict lookup for its route and nothing per event.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Message, Receive, Scope, Send

from app.devtools.fake_upstream.asgi import (
    ClientWatch,
    new_request_id,
    read_body,
    send_error,
    send_json,
)
from app.devtools.fake_upstream.errors import api_error
from app.devtools.fake_upstream.messages import ConnectionDropped, count_tokens, handle_messages
from app.devtools.fake_upstream.script import PlanError, plan_from_mapping
from app.devtools.fake_upstream.state import FakeUpstreamConfig, FakeUpstreamState

_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})


class _HideScriptedDrops(logging.Filter):
    """Drops uvicorn's 'Exception in ASGI application' record for a scripted drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideScriptedDrops) for f in logger.filters):
        logger.addFilter(_HideScriptedDrops())


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        out[name] = "<redacted>" if name in _SECRET_HEADERS else raw_value.decode("latin-1")
    return out


class FakeUpstreamApp:
    """An Anthropic-compatible Messages API that answers from scripts, directives or echo."""

    def __init__(self, config: FakeUpstreamConfig | None = None) -> None:
        self.state = FakeUpstreamState(config or FakeUpstreamConfig())
        _install_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/") or "/"
        raw = await read_body(receive)
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        request_id = new_request_id()
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": _headers(scope),
            "json": body,
            "time": time.time(),
            "request_id": request_id,
            "status": None,
        }
        if not path.startswith("/_fake/"):
            self.state.record(entry)

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        try:
            await self._route(method, path, body, scope, receive, send_recording, request_id)
        except ConnectionDropped:
            entry["dropped"] = True
            raise

    async def _route(
        self,
        method: str,
        path: str,
        body: Any,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
    ) -> int:
        if method == "POST" and path == "/v1/messages":
            if body is None:
                await send_error(send, api_error(400, message="Invalid JSON body."), request_id)
                return 400
            watch = ClientWatch(receive)
            try:
                return await handle_messages(self.state, body, watch, send, request_id)
            finally:
                watch.close()
        if method == "POST" and path == "/v1/messages/count_tokens":
            return await count_tokens(body, send, request_id)
        if path.startswith("/_fake/"):
            return await self._admin(method, path, body, scope, send)
        if method in ("GET", "HEAD") and path in ("/", "/healthz", "/api/hello"):
            await send_json(send, 200, {"status": "ok"})
            return 200
        await send_error(send, api_error(404, message=f"Not found: {method} {path}"), request_id)
        return 404

    async def _admin(self, method: str, path: str, body: Any, scope: Scope, send: Send) -> int:
        state = self.state
        if method == "POST" and path == "/_fake/script":
            items = body if isinstance(body, list) else [body]
            try:
                plans = [plan_from_mapping(item) for item in items if isinstance(item, dict)]
                if len(plans) != len(items):
                    raise PlanError("expected a JSON object or a list of objects")
            except PlanError as exc:
                await send_error(send, api_error(400, message=str(exc)))
                return 400
            await send_json(send, 200, {"queued": state.enqueue(plans)})
            return 200
        if method == "GET" and path == "/_fake/requests":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            only = query["path"][0] if "path" in query else None
            await send_json(send, 200, state.requests(only))
            return 200
        if method == "POST" and path == "/_fake/reset":
            state.reset()
            await send_json(send, 200, {"reset": True})
            return 200
        await send_error(send, api_error(404, message=f"Not found: {method} {path}"))
        return 404

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
