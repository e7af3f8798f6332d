"""Starting a turn: take the session lease, store the user message, create the turn, run it.

Everything that can fail with an HTTP status fails here, before the stream starts; once a
runner exists, failures travel in the stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.backends.events import TurnRequest
from app.coord.lock import Lease
from app.coord.slots import UserSlot
from app.errors import Conflict, InvalidInput, TooManyRequests
from app.observability import metrics
from app.store.messages import MessageRepository
from app.store.models import ChatMessage
from app.store.queue import MARK_STARTED, Queued
from app.store.sessions import SessionRepository, session_not_found
from app.store.turn_rows import StartOrder
from app.store.turns import TurnRepository
from app.turns.admission import Admission
from app.turns.runner import TurnRunner
from app.turns.services import TurnContext

# What a backend that keeps its own context reads of the history at a turn's start.
NEWEST_MESSAGES = 2
# `Retry-After` of a start refused at the user's cap: when a running turn ends is unknown,
# and a few seconds is a polite interval to ask again.
CAP_RETRY_AFTER_S = 5

log = logging.getLogger(__name__)

Trigger = Literal["submit-message", "regenerate-message"]
Policy = Literal["reject", "enqueue", "interrupt", "steer"]


@dataclass(slots=True)
class TurnOrder:
    """What the client asked for, already validated."""

    session_id: str
    user_id: str
    trigger: Trigger
    user_message_id: str | None
    user_parts: list[dict[str, Any]]
    user_metadata: dict[str, Any]
    regenerate_message_id: str | None
    # What to do when the session is busy; None: the session's policy, else the server's
    # (resolved by `begin_turn` with the ownership check).
    on_conflict: Policy | None
    # The queued message this turn answers (a start from the session's queue).
    queued: Queued | None = None


class QueuedGone(Conflict):
    """The queued message to start was cancelled (or started) meanwhile."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"queued message {message_id!r} was cancelled", code="queued_gone")


def session_busy(session_id: str, queued: bool = False) -> Conflict:
    """The 409 of a message that finds its session busy (a turn running, or messages queued
    for their turns)."""
    what = "messages are waiting for their turns" if queued else "a turn is already running"
    return Conflict(
        f"{what} in this session: resume it with "
        f"GET /api/v1/chat/{session_id}/stream, stop it with POST "
        f"/api/v1/chat/{session_id}/stop, or send on_conflict='enqueue', 'steer' or "
        "'interrupt'",
        code="turn_in_progress",
    )


async def _take_slot(ctx: TurnContext, order: TurnOrder, turn_id: uuid.UUID) -> UserSlot | None:
    """The user's place among their running turns, when `COPILOT_MAX_ACTIVE_TURNS_PER_USER`
    caps them; a user at the cap is refused before anything else has an effect."""
    cap = ctx.services.settings.max_active_turns_per_user
    if cap <= 0:
        return None
    slot = UserSlot(
        ctx.redis,
        ctx.keys.user_turns(order.user_id),
        order.session_id,
        str(turn_id),
        int(ctx.services.settings.lease_ttl_s * 1000),
    )
    if await slot.take(cap):
        return slot
    metrics.USER_CAP_REFUSALS.inc()
    raise TooManyRequests(
        f"you already have {cap} replies being written at once (the most allowed): wait for "
        "one to finish or stop one, then send again",
        code="too_many_turns",
        retry_after_s=CAP_RETRY_AFTER_S,
    )


async def _take_lease(
    ctx: TurnContext, order: TurnOrder, events_key: str, admission: Admission
) -> Lease:
    """The session's lease, with the turn's EventLog created in the same round trip."""
    log_ttl = ctx.services.settings.eventlog_ttl_s
    lease = Lease(
        ctx.redis,
        ctx.keys.session_lease(order.session_id),
        int(ctx.services.settings.lease_ttl_s * 1000),
        owner=ctx.replica_id,
    )
    if await lease.acquire(events_key, log_ttl):
        return lease
    metrics.LEASE_CONTENTION.inc()
    running = ctx.registry.for_session(order.session_id)
    if order.on_conflict == "interrupt" or (running is not None and running.stopping):
        # A turn being stopped (or one we may interrupt, on any replica) frees the session
        # within moments; other turns may start meanwhile.
        interrupting = order.on_conflict == "interrupt"
        admission.give_back()
        active = await ctx.services.rows.active_turn(order.session_id)
        await ctx.stopper.stop(order.session_id, active)
        await admission.take()
        if await lease.acquire(events_key, log_ttl):
            outcome = "interrupted" if interrupting else "waited"
            metrics.START_CONFLICTS.labels(order.on_conflict, outcome).inc()
            return lease
    if order.on_conflict == "reject":  # the others are counted where they are queued
        metrics.START_CONFLICTS.labels(order.on_conflict, "rejected").inc()
    raise session_busy(order.session_id)


async def _place_user_message(
    messages: MessageRepository, order: TurnOrder, turn_id: uuid.UUID
) -> str:
    """Store the new user message (idempotently) or pick the one to answer again."""
    last = await messages.last_visible(order.session_id)
    if order.trigger == "regenerate-message":
        if last is not None and last.role == "assistant":
            if order.regenerate_message_id not in (None, last.message_id):
                raise Conflict(
                    f"only the last assistant message ({last.message_id}) can be regenerated",
                    code="not_last_message",
                )
            await messages.supersede(last)
            last = await messages.last_visible(order.session_id)
        if last is None or last.role != "user":
            raise InvalidInput("there is no user message to answer", code="nothing_to_regenerate")
        return last.message_id
    message_id = order.user_message_id or f"user-{uuid.uuid4().hex}"
    existing = await messages.by_message_id(order.session_id, message_id)
    if existing is None:
        await messages.append(
            order.session_id,
            message_id=message_id,
            role="user",
            parts=order.user_parts,
            metadata=order.user_metadata,
            turn_id=turn_id,
        )
        return message_id
    return await _answer_again(messages, existing, last)


async def _answer_again(
    messages: MessageRepository, existing: ChatMessage, last: ChatMessage | None
) -> str:
    """A re-POST of a stored message: never a duplicate; its old answer, if any, is replaced."""
    if existing.role != "user" or existing.superseded_at is not None:
        raise Conflict(f"message id {existing.message_id!r} is taken", code="message_id_taken")
    if last is not None and last.role == "assistant" and last.seq == existing.seq + 1:
        await messages.supersede(last)
    elif last is None or last.seq != existing.seq:
        raise Conflict(
            f"message {existing.message_id!r} is not the latest; send a new message id",
            code="message_not_latest",
        )
    return existing.message_id


@dataclass(slots=True)
class StartedRows:
    """The history to answer (perhaps only its newest messages, with a loader for the rest)
    and whether this is a new chat."""

    history: list[dict[str, Any]]
    first: bool
    loader: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None


async def _start_rows(
    ctx: TurnContext, order: TurnOrder, turn_id: uuid.UUID, assistant_id: str
) -> StartedRows:
    """Store the turn's first rows; the history to answer, and whether this is a new chat."""
    model = ctx.services.backend.model
    backend = ctx.services.backend.name
    # A backend that keeps its own context needs the stored history only to seed a fresh
    # one: its turns read the newest messages, and the rest if it asks.
    limit = NEWEST_MESSAGES if ctx.services.backend.manages_context else None
    if order.trigger == "submit-message" and order.queued is None:
        message_id = order.user_message_id or f"user-{uuid.uuid4().hex}"
        started = await ctx.services.rows.start(
            StartOrder(
                session_id=order.session_id,
                user_id=order.user_id,
                turn_id=turn_id,
                user_message_id=message_id,
                user_parts=order.user_parts,
                user_metadata=order.user_metadata,
                assistant_message_id=assistant_id,
                backend=backend,
                model=model,
                replica_id=ctx.replica_id,
                history_limit=limit,
            )
        )
        if started is not None:
            history = [
                *started.history,
                {
                    "id": message_id,
                    "role": "user",
                    "parts": order.user_parts,
                    "metadata": order.user_metadata,
                },
            ]
            first = started.title is None and started.user_seq == 1
            loader = None
            if limit is not None and len(started.history) >= limit:
                rows, seq = ctx.services.rows, started.user_seq
                loader = functools.partial(rows.history, order.session_id, seq)
            return StartedRows(history, first, loader)
        order.user_message_id = message_id
    orphan = await ctx.services.rows.active_turn(order.session_id)
    if orphan is not None:
        # We hold the lease, so that turn's replica is gone: record it as the reaper would
        # have (its reply, a retryable error, its stream closed) before this turn starts.
        await ctx.reaper.reap(order.session_id, orphan)
    async with ctx.sessions() as db:
        sessions, messages = SessionRepository(db), MessageRepository(db)
        await sessions.get_or_create(order.user_id, order.session_id)
        session = await sessions.get(order.user_id, order.session_id, for_update=True)
        if session.active_turn_id is not None:
            # A turn that ended without freeing its session (a row older than the reaper).
            await sessions.set_active_turn(order.session_id, None)
        if order.queued is not None:
            marked = await db.execute(
                text(MARK_STARTED), {"turn_id": turn_id, "id": order.queued.id}
            )
            if marked.rowcount == 0:  # type: ignore[attr-defined]
                raise QueuedGone(order.queued.message_id)
        elif order.on_conflict != "interrupt" and await _queue_waits(db, order.session_id):
            # Messages wait for their turns: a new one goes after them, never ahead.
            raise session_busy(order.session_id, queued=True)
        user_message_id = await _place_user_message(messages, order, turn_id)
        answered = await messages.by_message_id(order.session_id, user_message_id)
        assert answered is not None  # placed (or picked) just above, in this transaction
        await messages.append(
            order.session_id,
            message_id=assistant_id,
            role="assistant",
            parts=[],
            status="streaming",
            turn_id=turn_id,
        )
        await TurnRepository(db).create(
            id=turn_id,
            session_id=order.session_id,
            user_message_id=user_message_id,
            assistant_message_id=assistant_id,
            trigger=order.trigger,
            status="running",
            backend=backend,
            model=model,
            replica_id=ctx.replica_id,
        )
        await sessions.set_active_turn(order.session_id, turn_id)
        await db.commit()
    # Read as the common case reads it (from the newest compaction on), once committed: the
    # lease keeps every other writer out of the session meanwhile.
    history = await ctx.services.rows.history(order.session_id, answered.seq)
    first = session.title is None and sum(m["role"] == "user" for m in history) == 1
    return StartedRows(history, first)


async def _queue_waits(db: AsyncSession, session_id: str) -> bool:
    waiting = await db.execute(
        text("SELECT 1 FROM queued_messages WHERE session_id = :s AND status = 'queued' LIMIT 1"),
        {"s": session_id},
    )
    return waiting.first() is not None


async def begin_turn(ctx: TurnContext, order: TurnOrder) -> TurnRunner:
    """Take the session, persist the turn's first rows, and start its runner.

    The common case (a new message) is one statement; anything else takes the general path.
    The EventLog is opened before the turn becomes visible, so a resume never misses it.
    At most as many turns as the start gate admits (`app.turns.admission`) are between here
    and their task's first step.
    """
    turn_id = uuid.uuid4()
    assistant_id = f"msg-{uuid.uuid4().hex}"
    events_key = ctx.keys.turn_events(order.session_id, str(turn_id))
    admission = Admission(ctx.starts)
    await admission.take()
    try:
        # Ownership first: another user's session must see no effect at all (no lease taken
        # or held, no turn stopped, no key or row written) and the same answer as an unknown
        # id. Checked once admitted, so that a burst does not flood the turns' pool with it.
        owner, policy = await ctx.services.rows.session_owner(order.session_id)
        if owner is not None and owner != order.user_id:
            raise session_not_found(order.session_id)
        if order.on_conflict is None:
            order.on_conflict = cast(Policy, policy or ctx.services.settings.on_conflict)
        slot = await _take_slot(ctx, order, turn_id)
        try:
            lease = await _take_lease(ctx, order, events_key, admission)
            try:
                started = await _start_rows(ctx, order, turn_id, assistant_id)
            except BaseException:
                # A refused start leaves nothing behind: the lease goes, the EventLog with it.
                await asyncio.shield(lease.release_or_retry(events_key))
                raise
        except BaseException:
            if slot is not None:  # and the user's slot
                await asyncio.shield(slot.release())
            raise
    except BaseException as exc:
        admission.give_back(exc)
        raise
    request = TurnRequest(
        session_id=order.session_id,
        turn_id=str(turn_id),
        history=started.history,
        model=ctx.services.backend.model,
        user_id=order.user_id,
        history_loader=started.loader,
    )
    runner = TurnRunner(
        ctx.services,
        request,
        assistant_message_id=assistant_id,
        events_key=events_key,
        lease=lease,
        slot=slot,
        on_started=admission.started,
        trigger=order.trigger,
        on_conflict=order.on_conflict or "reject",
    )
    ctx.registry.add(runner)
    runner.start()
    if started.first and ctx.titles is not None:
        ctx.titles.schedule(order.session_id, started.history[-1], after=runner.shown)
    return runner
