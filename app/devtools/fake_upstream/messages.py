"""`POST /v1/messages` and `/v1/messages/count_tokens`: plan, check, then stream or answer.

A scripted connection drop raises `ConnectionDropped` after the response started: uvicorn then
closes the socket without the chunked terminator, which is what a client sees when a real
connection dies mid-stream. `server.py` keeps uvicorn from logging a traceback for it.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
from starlette.types import Send

from app.devtools.fake_upstream.asgi import (
    ClientWatch,
    common_headers,
    send_bytes,
    send_error,
    send_json,
)
from app.devtools.fake_upstream.cache import InputUsage
from app.devtools.fake_upstream.errors import ApiError, api_error, prompt_too_long
from app.devtools.fake_upstream.images import image_error
from app.devtools.fake_upstream.reply import Reply, build_reply, choose_plan, message_json
from app.devtools.fake_upstream.script import PlanError, ReplyPlan
from app.devtools.fake_upstream.sse import StreamRenderer, event, message_end, message_start
from app.devtools.fake_upstream.state import FakeUpstreamState
from app.devtools.fake_upstream.tokens import estimate_input

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class ConnectionDropped(Exception):
    """Raised to make the server close a stream's connection abruptly, as scripted."""


def _validate(body: Any, *, need_max_tokens: bool) -> ApiError | None:
    if not isinstance(body, dict):
        return api_error(400, message="Request body must be a JSON object.")
    if not isinstance(body.get("model"), str):
        return api_error(400, message="model: Field required")
    if not isinstance(body.get("messages"), list):
        return api_error(400, message="messages: Field required")
    if need_max_tokens and not isinstance(body.get("max_tokens"), int):
        return api_error(400, message="max_tokens: Field required")
    return image_error(body)


async def count_tokens(body: Any, send: Send, request_id: str) -> int:
    """Answer `{"input_tokens": N}` with the same estimate the Messages endpoint uses."""
    error = _validate(body, need_max_tokens=False)
    if error is not None:
        await send_error(send, error, request_id)
        return error.status
    total = estimate_input(body).total
    await send_json(send, 200, {"input_tokens": total}, common_headers(request_id))
    return 200


def _failure_due(state: FakeUpstreamState, plan: ReplyPlan, body: dict[str, Any]) -> bool:
    """Whether this request gets the plan's failure (error, drop); directives honour `times`."""
    if plan.kind != "error" and plan.drop_after is None:
        return False
    if plan.times is None or not plan.source:
        return True
    key = hashlib.blake2b(plan.source.encode() + orjson.dumps(body["messages"])).digest()
    return state.count_error(key) < plan.times


def _plan_error(plan: ReplyPlan, model: str) -> ApiError:
    return api_error(
        plan.status,
        message=plan.message,
        error_type=plan.error_type,
        retry_after=plan.retry_after,
        model=model,
    )


async def handle_messages(
    state: FakeUpstreamState, body: Any, watch: ClientWatch, send: Send, request_id: str
) -> int:
    """Answer one Messages request; return the HTTP status sent."""
    error = _validate(body, need_max_tokens=True)
    if error is not None:
        await send_error(send, error, request_id)
        return error.status
    try:
        plan = state.pop_plan() or choose_plan(body)
    except PlanError as exc:
        await send_error(send, api_error(400, message=f"fake directive: {exc}"), request_id)
        return 400
    if plan.delay > 0 and not await watch.sleep(plan.delay):
        return 499
    estimate = estimate_input(body)
    limit = plan.context if plan.context is not None else state.config.context_tokens
    fail = False
    if estimate.total > limit:
        error = prompt_too_long(estimate.total, limit)
    else:
        fail = _failure_due(state, plan, body)
        if fail and plan.kind == "error" and plan.after is None:
            error = _plan_error(plan, body["model"])
    if error is not None:
        await send_error(send, error, request_id)
        return error.status
    usage = state.cache.account(estimate)
    reply = build_reply(plan, body)
    rate = plan.rate if plan.rate is not None else state.config.default_rate
    if body.get("stream") is True:
        cut = (plan.drop_after if plan.drop_after is not None else plan.after) if fail else None
        await _stream(state, plan, body, reply, usage, rate, cut, watch, send, request_id)
        return 200
    if rate > 0 and not await watch.sleep(reply.output_tokens / rate):
        return 499
    message = orjson.dumps(message_json(body["model"], reply, usage))
    headers = [(b"content-type", b"application/json"), *common_headers(request_id)]
    if fail and plan.drop_after is not None:
        headers.append((b"content-length", str(len(message)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = message[: len(message) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        raise ConnectionDropped("scripted drop of a non-streaming response")
    await send_bytes(send, 200, message, headers)
    return 200


async def _stream(
    state: FakeUpstreamState,
    plan: ReplyPlan,
    body: dict[str, Any],
    reply: Reply,
    usage: InputUsage,
    rate: float,
    cut: int | None,
    watch: ClientWatch,
    send: Send,
    request_id: str,
) -> None:
    """Stream `reply` as SSE at `rate` tokens/s, honouring scripted drops and stream errors."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, *common_headers(request_id)],
        }
    )
    loop = asyncio.get_running_loop()
    renderer = StreamRenderer(reply, state.config.max_tokens_per_delta)
    pending = message_start(body["model"], reply, usage)
    sent = 0
    tick = state.config.tick_seconds
    start = loop.time()
    while True:
        if rate <= 0:
            pending += renderer.render(reply.output_tokens)
        else:
            due = min(reply.output_tokens, int((loop.time() - start) * rate) + 1)
            pending += renderer.render(due - renderer.emitted)
        if renderer.done:
            pending += message_end(reply, usage)
        ready = sent + len(pending)
        if cut is not None and (ready > cut or (ready == cut and not renderer.done)):
            await _cut(plan, pending[: cut - sent], body, send, request_id)
            return
        await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
        sent += len(pending)
        pending = []
        if renderer.done:
            break
        next_due = start + renderer.emitted / rate
        if not await watch.sleep(max(next_due - loop.time(), tick)):
            return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cut(
    plan: ReplyPlan, events: list[bytes], body: dict[str, Any], send: Send, request_id: str
) -> None:
    """End a stream early: drop the connection, or send an `error` event and finish."""
    if plan.drop_after is not None:
        if events:
            await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})
        raise ConnectionDropped(f"scripted drop after {plan.drop_after} events")
    error = _plan_error(plan, body["model"])
    data = {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": request_id,
    }
    events.append(event("error", data))
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})
