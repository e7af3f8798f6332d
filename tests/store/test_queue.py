"""A session's message queue in Postgres: order, bound, idempotency, steering, cancelling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from app.store.db import connect_args
from app.store.queue import MessageIdTaken, MessageQueue, Queued, QueueFull, SessionGone
from app.store.turn_rows import TurnRows


@pytest_asyncio.fixture
async def queue(database_url: str) -> AsyncIterator[MessageQueue]:
    rows = await TurnRows.open(database_url, 8, connect_args(database_url))
    try:
        yield MessageQueue(rows.pool)
    finally:
        await rows.close()


async def _add(
    queue: MessageQueue, sid: str, mid: str, kind: str = "turn", limit: int = 10
) -> Queued:
    return await queue.add(
        session_id=sid,
        user_id="alice",
        message_id=mid,
        parts=[{"type": "text", "text": mid}],
        metadata={},
        kind=kind,
        accepted_by="replica",
        limit=limit,
    )


async def test_concurrent_adds_keep_the_bound_and_a_gapless_order(queue: MessageQueue) -> None:
    sid = f"q-{uuid.uuid4().hex[:8]}"
    results = await asyncio.gather(
        *(_add(queue, sid, f"m{i}", limit=5) for i in range(12)), return_exceptions=True
    )
    added = [r for r in results if not isinstance(r, BaseException)]
    assert len(added) == 5
    assert all(isinstance(r, QueueFull) for r in results if isinstance(r, BaseException))
    waiting = await queue.waiting(sid)
    assert [q.position for q in waiting] == [1, 2, 3, 4, 5]
    assert sorted(q.position for q in added) == [1, 2, 3, 4, 5]
    assert await queue.length(sid) == 5


async def test_a_retried_add_finds_its_message_and_a_stored_id_is_refused(
    queue: MessageQueue,
) -> None:
    sid = f"q-{uuid.uuid4().hex[:8]}"
    first = await _add(queue, sid, "same")
    again = await _add(queue, sid, "same")
    assert again.id == first.id
    assert await queue.length(sid) == 1
    await queue.pool.execute(
        "INSERT INTO chat_messages (session_id, seq, message_id, role, parts)"
        " VALUES ($1, 1, 'stored', 'user', '[]')",
        sid,
    )
    with pytest.raises(MessageIdTaken):
        await _add(queue, sid, "stored")


async def test_another_users_session_takes_no_message(queue: MessageQueue) -> None:
    sid = f"q-{uuid.uuid4().hex[:8]}"
    await _add(queue, sid, "mine")
    with pytest.raises(SessionGone):
        await queue.add(
            session_id=sid,
            user_id="mallory",
            message_id="theirs",
            parts=[],
            metadata={},
            kind="turn",
            accepted_by="replica",
            limit=10,
        )
    assert [q.message_id for q in await queue.waiting(sid)] == ["mine"]


async def test_steers_are_claimed_once_in_order_and_turns_are_left_waiting(
    queue: MessageQueue,
) -> None:
    sid = f"q-{uuid.uuid4().hex[:8]}"
    await _add(queue, sid, "s1", "steer")
    await _add(queue, sid, "t1", "turn")
    await _add(queue, sid, "s2", "steer")
    turn_id = uuid.uuid4()
    one, two = await asyncio.gather(
        queue.claim_steers(sid, turn_id), queue.claim_steers(sid, uuid.uuid4())
    )
    claimed = one + two
    assert sorted(q.message_id for q in claimed) == ["s1", "s2"]
    assert [q.message_id for q in (one or two)] == ["s1", "s2"]  # one claimer took both
    assert [q.message_id for q in await queue.waiting(sid)] == ["t1"]
    head = await queue.head(sid)
    assert head is not None
    assert head.message_id == "t1"


async def test_cancel_says_what_became_of_the_message(queue: MessageQueue) -> None:
    sid = f"q-{uuid.uuid4().hex[:8]}"
    await _add(queue, sid, "waiting")
    await _add(queue, sid, "steering", "steer")
    await queue.claim_steers(sid, uuid.uuid4())
    assert await queue.cancel(sid, "waiting") == "cancelled"
    assert await queue.cancel(sid, "waiting") == "cancelled"
    assert await queue.cancel(sid, "steering") == "steered"
    assert await queue.cancel(sid, "unknown") is None
    assert await queue.length(sid) == 0
