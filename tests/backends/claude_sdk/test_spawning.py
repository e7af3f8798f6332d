"""Boot admission: at most `max_booting` CLIs boot at once, each slot held until the CLI's
first message, and never kept by a turn that failed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.backends.claude_sdk.spawning import BootSlots
from app.backends.events import TextDelta
from app.store.transcripts import PostgresTranscripts
from tests.backends.claude_sdk.conftest import BackendFactory, Run, collect, request, user


async def test_slots_are_handed_out_in_arrival_order_up_to_the_limit() -> None:
    slots = BootSlots(2)
    first, second = await slots.acquire(), await slots.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        slot = await slots.acquire()
        order.append(i)
        slot.release()

    waiting = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert order == []
    first.release()
    first.release()  # idempotent: one slot back, not two
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2]
    second.release()


async def test_a_cancelled_wait_takes_no_slot() -> None:
    slots = BootSlots(1)
    held = await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    async with asyncio.timeout(1):
        (await slots.acquire()).release()


async def test_no_limit_never_waits() -> None:
    slots = BootSlots(0)
    held = [await slots.acquire() for _ in range(100)]
    for slot in held:
        slot.release()


async def _session(transcripts: PostgresTranscripts) -> str:
    sid = f"s-{uuid.uuid4().hex[:12]}"
    await transcripts.pool.execute("INSERT INTO chat_sessions (id, user_id) VALUES ($1, 'u')", sid)
    return sid


@pytest.mark.claude_cli
async def test_a_second_new_session_boots_once_the_first_cli_has_answered(
    make_backend: BackendFactory, transcripts: PostgresTranscripts
) -> None:
    backend = make_backend(max_booting=1)
    first, second = await _session(transcripts), await _session(transcripts)
    slow = Run(backend, request(first, user("[[fake:text tokens=40 rate=20]]")))
    await slow.seen(TextDelta)
    # the first CLI streams (its slot is back): the second boots and answers meanwhile
    events = await collect(backend, request(second, user("hi")))
    assert any(isinstance(e, TextDelta) for e in events)
    assert not slow.task.done()
    await slow.task
    assert backend.pool.live == 2


@pytest.mark.claude_cli
async def test_a_failed_boot_gives_its_slot_back(
    make_backend: BackendFactory, transcripts: PostgresTranscripts
) -> None:
    backend = make_backend(max_booting=1, cli_path="/nonexistent/claude")
    sid = await _session(transcripts)
    for _ in range(2):  # the second would wait forever if the first kept the slot
        async with asyncio.timeout(30):
            with pytest.raises(Exception, match="not found|No such file"):
                await collect(backend, request(sid, user("hi")))
