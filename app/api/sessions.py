"""The sessions REST API: create, list, get, rename, delete, history, turns and feedback, and
the messages waiting in a session's queue (listed with the history, cancelled one by one)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response

from app.api.body import JSONBodyRoute
from app.api.deps import CurrentUser, SessionDep, SettingsDep, StateDep
from app.api.errors import error_responses
from app.api.schemas import (
    SESSION_ID_PATTERN,
    AttemptOut,
    FeedbackIn,
    FeedbackOut,
    MessagePage,
    SessionCreate,
    SessionOut,
    SessionPage,
    SessionPatch,
    TurnList,
    TurnOut,
    UIMessageOut,
    UsageOut,
)
from app.api.text import Identifier
from app.config import Settings
from app.errors import Conflict, InvalidInput, NotFound
from app.lifespan import AppState
from app.store.feedback import FeedbackRepository, feedback_out
from app.store.messages import MessageRepository, as_ui_message
from app.store.models import ChatMessage, ChatSession, Turn, TurnAttempt
from app.store.queue import MessageQueue, Queued
from app.store.sessions import KEEP, SessionRepository
from app.store.turns import TurnRepository

router = APIRouter(
    prefix="/sessions",
    tags=["sessions"],
    route_class=JSONBodyRoute,
    responses=error_responses(404, 409),
)

SessionIdPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session id")]
MessageIdPath = Annotated[Identifier, Path(description="The id of an assistant message")]
QueuedIdPath = Annotated[Identifier, Path(description="The id of a queued user message")]


def _usage(row: ChatSession | Turn) -> UsageOut:
    return UsageOut(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cache_read_tokens=row.cache_read_tokens,
        cache_write_tokens=row.cache_write_tokens,
        cost_usd=row.cost_usd,
    )


def session_out(row: ChatSession, queue_length: int = 0) -> SessionOut:
    """A session row as the API shows it, with how many messages wait in its queue."""
    running = row.active_turn_id is not None
    return SessionOut(
        id=row.id,
        title=row.title,
        metadata=row.metadata_,
        status="running" if running else "queued" if queue_length else "idle",
        active_turn_id=str(row.active_turn_id) if row.active_turn_id else None,
        on_conflict=row.on_conflict,  # only the API writes it: one of the policies
        queue_length=queue_length,
        usage=_usage(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _turn_out(row: Turn, attempts: list[TurnAttempt]) -> TurnOut:
    return TurnOut(
        id=str(row.id),
        status=row.status,
        trigger=row.trigger,
        user_message_id=row.user_message_id,
        assistant_message_id=row.assistant_message_id,
        backend=row.backend,
        model=row.model,
        context_rung=row.context_rung,
        attempts=row.attempts,
        attempt_log=[
            AttemptOut(
                number=a.number,
                context_rung=a.context_rung,
                reason=a.reason,
                tokens_before=a.tokens_before,
                tokens_after=a.tokens_after,
                input_tokens=a.input_tokens,
                output_tokens=a.output_tokens,
                error_code=a.error_code,
                started_at=a.started_at,
                finished_at=a.finished_at,
            )
            for a in attempts
        ],
        finish_reason=row.finish_reason,
        error_code=row.error_code,
        error_message=row.error_message,
        started_at=row.started_at,
        first_token_at=row.first_token_at,
        finished_at=row.finished_at,
        ttft_ms=row.ttft_ms,
        duration_ms=row.duration_ms,
        usage=_usage(row),
        trace_id=row.trace_id,
        reaped_by=row.reaped_by,
    )


def _check_limits(settings: Settings, title: str | None, metadata: dict[str, Any] | None) -> None:
    limit = settings.server.max_title_chars
    if title is not None and len(title) > limit:
        raise InvalidInput(f"title: at most {limit} characters", code="validation_error")
    if metadata is not None:
        size = len(orjson.dumps(metadata))
        cap = settings.server.max_metadata_bytes
        if size > cap:
            raise InvalidInput(
                f"metadata: {size} bytes as JSON, at most {cap} (COPILOT_MAX_METADATA_BYTES)",
                code="validation_error",
            )


@router.post("", status_code=201, response_model=SessionOut)
async def create_session(
    body: SessionCreate, user: CurrentUser, db: SessionDep, settings: SettingsDep
) -> SessionOut:
    """Create a session (server uuid unless the client brings an id), with its own
    `on_conflict` policy if given."""
    _check_limits(settings, body.title, body.metadata)
    row = await SessionRepository(db).create(
        user.id, body.id, body.title, body.metadata, body.on_conflict
    )
    return session_out(row)


def _queue(state: AppState) -> MessageQueue:
    """The sessions' message queue (also where turns do not run on this replica)."""
    return state.turns.queue if state.turns is not None else MessageQueue(state.turn_rows.pool)


@router.get("", response_model=SessionPage)
async def list_sessions(
    user: CurrentUser,
    db: SessionDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SessionPage:
    """The caller's sessions, newest first; pass `next_cursor` back as `cursor` for more."""
    rows, next_cursor = await SessionRepository(db).page(user.id, limit, cursor)
    waiting = await _queue(state).lengths([r.id for r in rows])
    return SessionPage(
        sessions=[session_out(r, waiting.get(r.id, 0)) for r in rows], next_cursor=next_cursor
    )


async def _with_queue(state: AppState, row: ChatSession) -> SessionOut:
    return session_out(row, await _queue(state).length(row.id))


@router.get("/{session_id}", response_model=SessionOut)
async def get_session(
    session_id: SessionIdPath, user: CurrentUser, db: SessionDep, state: StateDep
) -> SessionOut:
    """A session with its status, active turn, usage totals, policy and queue length."""
    return await _with_queue(state, await SessionRepository(db).get(user.id, session_id))


@router.patch("/{session_id}", response_model=SessionOut)
async def patch_session(
    session_id: SessionIdPath,
    body: SessionPatch,
    user: CurrentUser,
    db: SessionDep,
    state: StateDep,
    settings: SettingsDep,
) -> SessionOut:
    """Rename a session, replace its metadata and/or set its `on_conflict` policy.

    `on_conflict` (reject, enqueue, interrupt, steer) is what a message sent while a turn runs
    does when its request does not say; null clears it (`COPILOT_ON_CONFLICT` applies).
    """
    _check_limits(settings, body.title, body.metadata)
    row = await SessionRepository(db).update(
        user.id,
        session_id,
        title=body.title,
        metadata=body.metadata,
        on_conflict=body.on_conflict if "on_conflict" in body.model_fields_set else KEEP,
    )
    return await _with_queue(state, row)


@router.delete("/{session_id}", status_code=204, response_class=Response)
async def delete_session(session_id: SessionIdPath, user: CurrentUser, state: StateDep) -> Response:
    """Stop the active turn, delete messages, turns, transcript and workspace."""
    # No request-scoped DB session: it would be held while the turn stops.
    async with state.sessions() as db:
        session = await SessionRepository(db).get(user.id, session_id)
    if state.turns is not None:
        await state.turns.stopper.stop(session_id, session.active_turn_id)
    async with state.sessions() as db:
        await SessionRepository(db).delete(user.id, session_id)
        await db.commit()
    if state.turns is not None:
        # Every replica drops what it keeps for the session (a warm CLI, its workspace);
        # this one at once, whatever Redis does.
        await state.turns.services.backend.forget_session(session_id)
        await state.turns.stopper.forget(session_id)
    return Response(status_code=204)


@router.get("/{session_id}/messages", response_model=MessagePage)
async def list_messages(
    session_id: SessionIdPath,
    user: CurrentUser,
    db: SessionDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[Identifier | None, Query(description="A message id")] = None,
) -> MessagePage:
    """History as AI SDK UIMessages, oldest first; `before` pages back from a message id.

    The reply of a turn still running is left out: resuming its stream replays it whole.
    A rated reply has `metadata.feedback` (`{rating, comment?}`). The newest page (no
    `before`) ends with the messages waiting in the session's queue, in order, beyond `limit`
    (at most `COPILOT_MAX_QUEUED`): user messages whose `metadata` has `status: "queued"`,
    `position` (1: next) and `onConflict` (enqueue or steer).
    """
    session = await SessionRepository(db).get(user.id, session_id)
    # The queue before the history: a message whose turn starts in between is then in the
    # history (its start moves it there in one transaction), never missing from both.
    waiting = await _queue(state).waiting(session_id) if before is None else []
    rows, more = await MessageRepository(db).page(session_id, limit, before)
    active = session.active_turn_id
    shown = [r for r in rows if active is None or r.turn_id != active or r.role != "assistant"]
    rated = await FeedbackRepository(db).for_messages(
        session_id, [r.message_id for r in shown if r.role == "assistant"]
    )
    messages = []
    for row in shown:
        message = as_ui_message(row)
        if row.message_id in rated:
            message["metadata"]["feedback"] = feedback_out(rated[row.message_id])
        messages.append(UIMessageOut(**message))
    listed = {row.message_id for row in rows}
    waiting = [q for q in waiting if q.message_id not in listed]
    messages.extend(_queued_message(q, n) for n, q in enumerate(waiting, start=1))
    return MessagePage(messages=messages, has_more=more)


def _queued_message(row: Queued, position: int) -> UIMessageOut:
    """A waiting message as the user's UIMessage, with its place in the queue."""
    metadata = dict(row.metadata)
    metadata.setdefault("createdAt", row.created_at.isoformat())
    metadata.update(
        status="queued",
        position=position,
        onConflict="steer" if row.kind == "steer" else "enqueue",
    )
    return UIMessageOut(id=row.message_id, role="user", parts=row.parts, metadata=metadata)


@router.delete(
    "/{session_id}/messages/{message_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(422),
)
async def cancel_queued_message(
    session_id: SessionIdPath,
    message_id: QueuedIdPath,
    user: CurrentUser,
    db: SessionDep,
    state: StateDep,
) -> Response:
    """Cancel a message waiting in the session's queue: 204 (again for one cancelled already).

    Its POST's stream says `data-status` cancelled and ends; it never runs. 409
    `message_started` once its turn started or it joined the running turn (steered), 409
    `message_not_queued` for a message of the history that was never queued, 404
    `message_not_found` for an id the session does not know.
    """
    await SessionRepository(db).get(user.id, session_id)
    status = await _queue(state).cancel(session_id, message_id)
    if status == "cancelled":
        return Response(status_code=204)
    if status is not None:
        what = (
            "has joined the running turn (steered): that turn's reply is being written"
            if status == "steered"
            else "has started its turn: its reply is being written"
        )
        started = Conflict(
            f"message {message_id!r} {what}; stop the turn with POST "
            f"/api/v1/chat/{session_id}/stop",
            code="message_started",
        )
        started.extra = {"status": status}  # started or steered
        raise started
    if await MessageRepository(db).by_message_id(session_id, message_id) is not None:
        raise Conflict(
            f"message {message_id!r} was never queued: only a queued message can be cancelled",
            code="message_not_queued",
        )
    raise NotFound(f"no message {message_id!r} in session {session_id!r}", code="message_not_found")


@router.get("/{session_id}/turns", response_model=TurnList)
async def list_turns(session_id: SessionIdPath, user: CurrentUser, db: SessionDep) -> TurnList:
    """The session's turns with status, timings, attempts, usage, cost and error code."""
    await SessionRepository(db).get(user.id, session_id)
    turns = TurnRepository(db)
    rows = await turns.for_session(session_id)
    attempts = await turns.attempts([r.id for r in rows])
    return TurnList(turns=[_turn_out(r, attempts.get(r.id, [])) for r in rows])


async def _rated_reply(
    db: SessionDep, user_id: str, session_id: str, message_id: str
) -> ChatMessage:
    """The caller's finished assistant message, or the error saying why it cannot be rated."""
    await SessionRepository(db).get(user_id, session_id)
    message = await MessageRepository(db).by_message_id(session_id, message_id)
    if message is None:
        raise NotFound(
            f"no message {message_id!r} in session {session_id!r}", code="message_not_found"
        )
    if message.role != "assistant":
        raise InvalidInput(
            f"message {message_id!r} is the user's: only assistant replies take feedback",
            code="not_an_assistant_message",
        )
    if message.status == "streaming":
        raise Conflict(
            f"message {message_id!r} is still being written: rate it once its turn ends",
            code="reply_in_progress",
        )
    return message


async def _trace_of(db: SessionDep, message: ChatMessage) -> str | None:
    if message.turn_id is None:
        return None
    turn = await TurnRepository(db).get(message.turn_id)
    return turn.trace_id if turn is not None else None


@router.put(
    "/{session_id}/messages/{message_id}/feedback",
    response_model=FeedbackOut,
    responses=error_responses(422),
)
async def put_feedback(
    session_id: SessionIdPath,
    message_id: MessageIdPath,
    body: FeedbackIn,
    user: CurrentUser,
    db: SessionDep,
    state: StateDep,
) -> FeedbackOut:
    """Rate an assistant reply (up or down, with a comment); a new rating replaces the old.

    Sent to Langfuse as a score of the reply's turn trace when tracing is on.
    """
    message = await _rated_reply(db, user.id, session_id, message_id)
    row = await FeedbackRepository(db).put(
        session_id, message_id, user.id, body.rating, body.comment
    )
    trace_id = await _trace_of(db, message)
    out = FeedbackOut(
        message_id=message_id, rating=body.rating, comment=row.comment, updated_at=row.updated_at
    )
    await db.commit()  # stored before it is sent: a score never precedes its row
    if state.tracer is not None and trace_id is not None:
        state.tracer.score_feedback(
            trace_id=trace_id, message_id=message_id, rating=body.rating, comment=body.comment
        )
    return out


@router.delete(
    "/{session_id}/messages/{message_id}/feedback",
    status_code=204,
    response_class=Response,
    responses=error_responses(422),
)
async def delete_feedback(
    session_id: SessionIdPath,
    message_id: MessageIdPath,
    user: CurrentUser,
    db: SessionDep,
    state: StateDep,
) -> Response:
    """Take a rating back: 204, also when the reply had none (the result is the same)."""
    message = await _rated_reply(db, user.id, session_id, message_id)
    removed = await FeedbackRepository(db).remove(session_id, message_id)
    trace_id = await _trace_of(db, message)
    await db.commit()
    if removed and state.tracer is not None and trace_id is not None:
        state.tracer.retract_feedback(trace_id=trace_id, message_id=message_id)
    return Response(status_code=204)
