"""Messages sent while their session's turn runs (`on_conflict` "enqueue" and "steer").

The queue is the order. A message that finds its session busy is stored at once in
`queued_messages` (`app.store.queue`) and its POST is answered 200 with a stream that says
`data-status queued` (its position, again whenever it moves), then carries its own turn's
chunks once that turn starts, wherever it runs. A "steer" message waits the same way, but the
running turn takes it in at its next model call (`TurnRunner.take_steers`); then its stream
says `data-status steered` and ends, and the running turn's stream shows it as a `data-steer`
part. A steer the turn could not take in (it ended first) is simply the queue's next message.

**Whoever holds a session's lease while messages wait starts the oldest one** (`kick`): a
fresh POST finds the session busy as long as messages wait (the start statement checks, and
only `interrupt` goes ahead of them), so the order is the queue's. A session becomes free when
a turn ends (its final statement says how many wait, and the replica that ran it kicks), and
the kick is repeated by whoever might have missed that moment: a new queued message's POST
(the turn may have ended between its 409 and its insert), each waiting stream once in a
while, and the reaper, which kicks the queues of sessions nobody holds (the replica that
should have started the next turn died) and the queue of every turn it reaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from app.coord.redis import REDIS_ERRORS
from app.errors import Conflict, TooManyRequests
from app.lifespan import AppState
from app.observability import metrics
from app.store.queue import MessageIdTaken, Queued, QueueFull, SessionGone
from app.store.sessions import session_not_found
from app.stream import chunks
from app.stream.sse import DONE, PING
from app.turns.follow import turn_frames
from app.turns.runner import TurnRunner
from app.turns.services import TurnContext
from app.turns.start import QueuedGone, TurnOrder, begin_turn

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a waiting stream looks at its message
KICK_EVERY_S = 2.0  # how often a waiting stream starts the queue itself if nobody does
QUEUE_FULL_RETRY_AFTER_S = 5
MAX_SKIPS = 100  # cancelled messages a kick steps over before it gives up for now

_KICKS: set[asyncio.Task[None]] = set()


def status_frame(status: str, **data: Any) -> bytes:
    """A transient `data-status` event without an `id:` (it is no chunk of any turn)."""
    return b"data: " + orjson.dumps(chunks.data_status(status, **data)) + b"\n\n"


async def enqueue(ctx: TurnContext, order: TurnOrder) -> Queued:
    """Store a message that found its session busy, in order; a steer is announced to the
    replica running the session's turn. 429 past `COPILOT_MAX_QUEUED`, 409 for a message id
    the history holds already; a message queued already (a retried POST) is found again."""
    policy = order.on_conflict or "enqueue"
    kind = "steer" if policy == "steer" else "turn"
    try:
        queued = await ctx.queue.add(
            session_id=order.session_id,
            user_id=order.user_id,
            message_id=order.user_message_id or f"user-{uuid.uuid4().hex}",
            parts=order.user_parts,
            metadata=order.user_metadata,
            kind=kind,
            accepted_by=ctx.replica_id,
            limit=ctx.services.settings.max_queued,
        )
    except QueueFull as full:
        metrics.START_CONFLICTS.labels(policy, "rejected").inc()
        raise TooManyRequests(
            f"{full.args[0]} messages already wait in this session (COPILOT_MAX_QUEUED): wait "
            "for a reply, or cancel one with DELETE /api/v1/sessions/{id}/messages/{id}",
            code="queue_full",
            retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
        ) from None
    except MessageIdTaken:
        raise Conflict(
            f"message id {order.user_message_id!r} is taken: send a new message id",
            code="message_id_taken",
        ) from None
    except SessionGone:
        raise session_not_found(order.session_id) from None
    metrics.START_CONFLICTS.labels(policy, "queued").inc()
    if kind == "steer":
        # Best effort: a steer the running turn never hears of becomes the next turn.
        with contextlib.suppress(*REDIS_ERRORS):
            await ctx.stopper.steer(order.session_id)
    kick_soon(ctx, order.session_id)  # the turn may have ended since the 409
    return queued


async def kick(ctx: TurnContext, session_id: str) -> TurnRunner | None:
    """Start the oldest waiting message of the session if the session is free; its runner."""
    if ctx.draining():
        return None  # another replica's reaper (or a waiting stream there) will
    for _ in range(MAX_SKIPS):
        head = await ctx.queue.head(session_id)
        if head is None:
            return None
        order = TurnOrder(
            session_id=session_id,
            user_id=head.user_id,
            trigger="submit-message",
            user_message_id=head.message_id,
            user_parts=head.parts,
            user_metadata=head.metadata,
            regenerate_message_id=None,
            on_conflict="reject",
            queued=head,
        )
        try:
            return await begin_turn(ctx, order)
        except QueuedGone:
            continue  # cancelled meanwhile: the next one
        except (Conflict, TooManyRequests):
            return None  # a turn holds the session (its end kicks again), or the user's cap
    return None


def kick_soon(ctx: TurnContext, session_id: str) -> None:
    """`kick` in the background (its failure is logged: the next kick tries again)."""

    async def run() -> None:
        try:
            await kick(ctx, session_id)
        except Exception as exc:
            log.warning("queue of session %s not started: %s", session_id, exc)

    task = asyncio.create_task(run(), name=f"kick-{session_id}")
    _KICKS.add(task)
    task.add_done_callback(_KICKS.discard)


def after_turn(ctx: TurnContext, runner: TurnRunner) -> None:
    """A turn ended: start the next waiting message, if any (its final write counted them)."""
    if runner.waiting_after > 0:
        kick_soon(ctx, runner.session_id)


async def follow_queued(
    state: AppState, ctx: TurnContext, queued: Queued
) -> AsyncGenerator[bytes, None]:
    """The stream of a waiting message: `data-status` queued (or steering) with its position,
    `: ping` while idle, then its own turn's frames; `steered` or `cancelled` and the end when
    it gets no turn of its own."""
    heartbeat_s = state.settings.turns.heartbeat_s
    lease_key = state.keys.session_lease(queued.session_id)
    shown: tuple[str, int] | None = None
    last_sent = last_kick = time.monotonic()
    current: Queued | None = queued
    while current is not None and current.status == "queued":
        waiting = "steering" if current.kind == "steer" else "queued"
        if (waiting, current.position) != shown:
            shown = (waiting, current.position)
            yield status_frame(waiting, messageId=current.message_id, position=current.position)
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_S)
        now = time.monotonic()
        if now - last_kick >= KICK_EVERY_S:
            last_kick = now
            if not await state.redis.exists(lease_key):
                kick_soon(ctx, queued.session_id)
        if now - last_sent >= heartbeat_s:
            last_sent = now
            yield PING
        current = await ctx.queue.get(queued.id)
    if current is None or current.status == "cancelled":
        yield status_frame("cancelled", messageId=queued.message_id) + DONE
        return
    assert current.turn_id is not None
    if current.status == "steered":
        turn_id = str(current.turn_id)
        yield status_frame("steered", messageId=queued.message_id, turnId=turn_id) + DONE
        return
    async for data in turn_frames(state, queued.session_id, current.turn_id, -1):
        yield data
