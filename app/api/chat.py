"""The chat API: start a turn and stream it, resume the stream, stop the turn."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from app.api.attachments import check_attachments
from app.api.body import JSONBodyRoute
from app.api.deps import CurrentUser, StateDep
from app.api.errors import error_responses
from app.api.schemas import SESSION_ID_PATTERN, SessionId
from app.api.text import Identifier, Text, clean_value, storable_json
from app.config import TurnSettings
from app.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, ServiceUnavailable
from app.lifespan import AppState
from app.observability import metrics
from app.observability.log_context import bind
from app.store.sessions import SessionRepository
from app.stream.response import EventStream
from app.stream.sse import HEADERS
from app.stream.text import parts_text
from app.turns.follow import turn_frames
from app.turns.queueing import enqueue, follow_queued
from app.turns.runner import TurnRunner
from app.turns.services import TurnContext
from app.turns.start import TurnOrder, begin_turn

router = APIRouter(
    prefix="/chat", tags=["chat"], route_class=JSONBodyRoute, responses=error_responses(404, 409)
)

USER_PART_TYPES = {"text", "file"}


class UIMessageIn(BaseModel):
    """An AI SDK `UIMessage` as `DefaultChatTransport` sends it."""

    model_config = ConfigDict(extra="ignore")

    id: Identifier
    role: Literal["user", "assistant", "system"]
    parts: list[dict[str, Any]]
    metadata: Annotated[Any, AfterValidator(storable_json)] = None

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
    message: Text | None = None
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: Identifier | None = Field(default=None, alias="messageId")
    # What to do if a turn runs in the session; None: the session's policy, else the
    # server's (`COPILOT_ON_CONFLICT`).
    on_conflict: Literal["reject", "enqueue", "interrupt", "steer"] | None = None
    on_disconnect: Literal["continue", "cancel"] = "continue"

    @model_validator(mode="after")
    def _has_input(self) -> ChatRequest:
        if self.trigger == "submit-message" and not self.messages and self.message is None:
            raise ValueError("send 'messages' (AI SDK) or 'message' (text)")
        return self


def _order(body: ChatRequest, user_id: str, limits: TurnSettings) -> TurnOrder:
    """The validated order; the user's parts with NUL and lone surrogates made visible."""
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
            parts, message_id = clean_value(last.parts), last.id
            metadata = last.metadata if isinstance(last.metadata, dict) else {}
        else:
            parts = [{"type": "text", "text": body.message or ""}]
        text = parts_text(parts)
        if not text.strip() and not any(p["type"] == "file" for p in parts):
            raise InvalidInput("the message is empty", code="empty_message")
        max_chars = limits.max_message_chars
        if len(text) > max_chars:
            raise PayloadTooLarge(
                f"the message has {len(text)} characters; at most {max_chars} "
                "(COPILOT_MAX_MESSAGE_CHARS)",
                code="message_too_long",
            )
        check_attachments(parts, limits.max_attachment_bytes, limits.max_attachments)
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
        429: {"description": "the user runs COPILOT_MAX_ACTIVE_TURNS_PER_USER turns already"},
    },
)
async def chat(body: ChatRequest, user: CurrentUser, state: StateDep) -> Response:
    """Start a turn and answer with its UI message stream."""
    state.drain.refuse_new_turn()
    ctx = _turns(state)
    bind(session_id=body.id)
    order = _order(body, user.id, state.settings.turns)
    try:
        runner = await begin_turn(ctx, order)
    except Conflict as busy:
        # The session's policy is known once `begin_turn` has read it.
        queueing = order.on_conflict in ("enqueue", "steer")
        if busy.code != "turn_in_progress" or not queueing or order.trigger != "submit-message":
            raise
        queued = await enqueue(ctx, order)
        return _stream(state, follow_queued(state, ctx, queued))

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
    ctx = _turns(state)
    runner: TurnRunner | None = ctx.registry.for_session(session_id)
    if runner is not None and not runner.done:
        return _stream(state, runner.frames_from(start + 1))
    if session.active_turn_id is not None:
        return _stream(state, turn_frames(state, session_id, session.active_turn_id, start))
    # Between two turns of a queue: the next one's stream, from its queued status on.
    head = await ctx.queue.head(session_id)
    if head is None:
        return Response(status_code=204)
    return _stream(state, follow_queued(state, ctx, head))


@router.post("/{session_id}/stop", status_code=202, responses={204: {"description": "no turn"}})
async def stop(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    user: CurrentUser,
    state: StateDep,
) -> Response:
    """Stop the session's active turn: 202 when a stop was sent, 204 when none runs.

    The answer comes once the turn is persisted and the session free (bounded), so that a
    message sent right after the stop is not refused with 409."""
    async with state.sessions() as db:
        session = await SessionRepository(db).get(user.id, session_id)
    stopped = await _turns(state).stopper.stop(session_id, session.active_turn_id)
    return Response(status_code=202 if stopped else 204)
