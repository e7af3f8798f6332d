"""The chat API: start a turn and stream it, resume the stream, stop the turn."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Path, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.api.deps import CurrentUser, StateDep
from app.api.schemas import SESSION_ID_PATTERN, SessionId
from app.errors import InvalidInput, NotFound, PayloadTooLarge, ServiceUnavailable
from app.lifespan import AppState
from app.observability import metrics
from app.store.sessions import SessionRepository
from app.stream.response import EventStream
from app.stream.sse import HEADERS
from app.turns.follow import follow_log, follow_persisted
from app.turns.runner import TurnRunner
from app.turns.services import TurnContext
from app.turns.start import STOP_WAIT_S, TurnOrder, begin_turn

router = APIRouter(prefix="/chat", tags=["chat"])

FREED_POLL_S = 0.05  # how often a stop sent to another replica looks whether it took effect

USER_PART_TYPES = {"text", "file"}
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class UIMessageIn(BaseModel):
    """An AI SDK `UIMessage` as `DefaultChatTransport` sends it."""

    model_config = ConfigDict(extra="ignore")

    id: MessageId
    role: Literal["user", "assistant", "system"]
    parts: list[dict[str, Any]]
    metadata: Any = None

    @field_validator("parts")
    @classmethod
    def _parts_have_types(cls, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, part in enumerate(parts):
            kind = part.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError(f"part {index} has no 'type'")
            if kind in ("text", "reasoning") and not isinstance(part.get("text"), str):
                raise ValueError(f"part {index} ({kind}) needs a string 'text'")
            if kind == "file" and not (
                isinstance(part.get("url"), str) and isinstance(part.get("mediaType"), str)
            ):
                raise ValueError(f"part {index} (file) needs string 'url' and 'mediaType'")
        return parts


class ChatRequest(BaseModel):
    """The body `DefaultChatTransport` sends, or `{id, message: "text"}`."""

    model_config = ConfigDict(extra="ignore")

    id: SessionId
    messages: list[UIMessageIn] | None = Field(default=None, max_length=10_000)
    message: str | None = None
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: MessageId | None = Field(default=None, alias="messageId")
    on_conflict: Literal["reject", "enqueue", "interrupt"] = "reject"
    on_disconnect: Literal["continue", "cancel"] = "continue"

    @model_validator(mode="after")
    def _has_input(self) -> ChatRequest:
        if self.trigger == "submit-message" and not self.messages and self.message is None:
            raise ValueError("send 'messages' (AI SDK) or 'message' (text)")
        return self


def _order(body: ChatRequest, user_id: str, max_chars: int) -> TurnOrder:
    parts: list[dict[str, Any]] = []
    message_id: str | None = None
    metadata: dict[str, Any] = {}
    if body.trigger == "submit-message":
        if body.messages:
            last = body.messages[-1]
            if last.role != "user":
                raise InvalidInput("the last message must be the user's", code="validation_error")
            bad = [p["type"] for p in last.parts if p["type"] not in USER_PART_TYPES]
            if bad:
                raise InvalidInput(
                    f"a user message cannot carry {bad[0]!r} parts", code="validation_error"
                )
            parts, message_id = last.parts, last.id
            metadata = last.metadata if isinstance(last.metadata, dict) else {}
        else:
            parts = [{"type": "text", "text": body.message or ""}]
        text = "".join(str(p.get("text", "")) for p in parts if p["type"] == "text")
        if not text.strip() and not any(p["type"] == "file" for p in parts):
            raise InvalidInput("the message is empty", code="empty_message")
        if len(text) > max_chars:
            raise PayloadTooLarge(
                f"the message has {len(text)} characters; at most {max_chars} "
                "(COPILOT_MAX_MESSAGE_CHARS)",
                code="message_too_long",
            )
    return TurnOrder(
        session_id=body.id,
        user_id=user_id,
        trigger=body.trigger,
        user_message_id=message_id,
        user_parts=parts,
        user_metadata=metadata,
        regenerate_message_id=body.message_id,
        on_conflict=body.on_conflict,
    )


def _turns(state: AppState) -> TurnContext:
    if state.turns is None:
        raise ServiceUnavailable("turns are not running on this replica")
    return state.turns


def _stream(
    state: AppState,
    frames: AsyncGenerator[bytes, None],
    on_close: Callable[[], None] | None = None,
) -> EventStream:
    """The SSE response of a consumer; `on_close` runs when it ends, however it ends."""
    metrics.STREAMS_ACTIVE.inc()

    def closed() -> None:
        metrics.STREAMS_ACTIVE.dec()
        if on_close is not None:
            on_close()

    return EventStream(frames, HEADERS, state.settings.turns.send_timeout_s, closed)


@router.post(
    "",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "AI SDK UI message stream v1"},
        409: {"description": "a turn is already running in this session"},
    },
)
async def chat(body: ChatRequest, user: CurrentUser, state: StateDep) -> Response:
    """Start a turn and answer with its UI message stream."""
    ctx = _turns(state)
    order = _order(body, user.id, state.settings.turns.max_message_chars)
    runner = await begin_turn(state, ctx, order)

    def on_close() -> None:
        if body.on_disconnect == "cancel" and not runner.done:
            runner.stop("stopped")

    return _stream(state, runner.frames_from(0), on_close)


@router.get(
    "/{session_id}/stream",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "replay, then live chunks"},
        204: {"description": "no active turn"},
    },
)
async def resume(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    user: CurrentUser,
    state: StateDep,
    last_event_id: Annotated[int | None, Header(ge=-1)] = None,
) -> Response:
    """Resume the active turn's stream: replay (after `Last-Event-ID`), then live; 204 if none.

    An unknown session is 204 too: `useChat({resume: true})` asks before its first message.
    """
    try:
        async with state.sessions() as db:
            session = await SessionRepository(db).get(user.id, session_id)
    except NotFound:
        return Response(status_code=204)
    start = -1 if last_event_id is None else last_event_id
    heartbeat = state.settings.turns.heartbeat_s
    runner: TurnRunner | None = _turns(state).registry.for_session(session_id)
    if runner is not None and not runner.done:
        return _stream(state, runner.frames_from(start + 1))
    if session.active_turn_id is None:
        return Response(status_code=204)
    key = state.keys.turn_events(session_id, str(session.active_turn_id))
    if await state.redis.exists(key):
        tail = follow_log(state, session_id, session.active_turn_id, start, heartbeat)
        return _stream(state, tail)
    return _stream(
        state, follow_persisted(state, session_id, session.active_turn_id, start, heartbeat)
    )


@router.post("/{session_id}/stop", status_code=202, responses={204: {"description": "no turn"}})
async def stop(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    user: CurrentUser,
    state: StateDep,
) -> Response:
    """Stop the session's active turn: 202 when a stop was sent, 204 when none runs."""
    async with state.sessions() as db:
        session = await SessionRepository(db).get(user.id, session_id)
    turns = _turns(state)
    runner = turns.registry.for_session(session_id)
    # Either way, answer once the turn is persisted and the session free (bounded), so that
    # a message sent right after the stop is not refused with 409.
    if runner is not None and runner.stop("stopped"):
        with anyio.move_on_after(STOP_WAIT_S):
            await runner.wait_persisted()
        return Response(status_code=202)
    turn_id = session.active_turn_id
    if turn_id is not None:
        listeners = await state.redis.publish(state.keys.stop_channel(session_id), str(turn_id))
        others = listeners - turns.stops.subscribed.is_set()
        # On a Cluster the count is the receiving node's only. No other replica listening:
        # none runs the turn any more (its lease expires; the next message records it).
        if others > 0 or state.settings.redis.cluster:
            with anyio.move_on_after(STOP_WAIT_S):
                await _wait_freed(state, user.id, session_id, turn_id)
        return Response(status_code=202)
    return Response(status_code=204)


async def _wait_freed(state: AppState, user_id: str, session_id: str, turn_id: uuid.UUID) -> None:
    """Until the session's lease is gone (its turn ended on another replica and released
    it), or another turn has started."""
    lease = state.keys.session_lease(session_id)
    while await state.redis.exists(lease):
        async with state.sessions() as db:
            active = (await SessionRepository(db).get(user_id, session_id)).active_turn_id
        if active not in (None, turn_id):
            return
        await asyncio.sleep(FREED_POLL_S)
