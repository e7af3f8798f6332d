"""FrameBuffer: one turn's frames, read from any index by any number of consumers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from app.stream.frames import FrameBuffer
from app.stream.sse import DONE, PING, frame, split_frames

HEARTBEAT_S = 10.0
WAIT_S = 2.0  # a deadline for what must already be there, never a synchronisation delay

A, B, C = frame(0, {"type": "start"}), frame(1, {"type": "x"}), frame(2, {"type": "finish"})


async def _next(reader: AsyncGenerator[bytes, None]) -> bytes:
    return await asyncio.wait_for(anext(reader), WAIT_S)


async def _parked(reader: AsyncGenerator[bytes, None]) -> asyncio.Task[bytes]:
    """The reader's next read, started and left waiting for the buffer to change."""
    task = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)  # one turn of the loop: the reader runs up to its wait
    assert not task.done()
    return task


async def _drain(reader: AsyncGenerator[bytes, None]) -> list[bytes]:
    """Every frame the reader yields until `[DONE]` (the buffer must be ended)."""
    out: list[bytes] = []
    async with asyncio.timeout(WAIT_S):
        async for item in reader:
            out.extend([item] if item in (PING, DONE) else split_frames(item))
    return out


async def test_a_reader_from_the_start_gets_every_frame_in_order_then_done() -> None:
    buffer = FrameBuffer()
    for f in (A, B, C):
        buffer.append(f)
    buffer.end()
    assert await _drain(buffer.read_from(0)) == [A, B, C, DONE]


async def test_a_reader_that_is_behind_gets_what_it_missed_in_one_batch() -> None:
    buffer = FrameBuffer()
    for f in (A, B, C):
        buffer.append(f)
    assert await _next(buffer.read_from(0)) == A + B + C


async def test_a_reader_from_an_index_gets_the_frames_from_there_on() -> None:
    buffer = FrameBuffer()
    for f in (A, B, C):
        buffer.append(f)
    buffer.end()
    assert await _drain(buffer.read_from(1)) == [B, C, DONE]


async def test_a_reader_from_the_end_gets_only_done() -> None:
    buffer = FrameBuffer()
    buffer.append(A)
    buffer.end()
    assert await _drain(buffer.read_from(1)) == [DONE]


async def test_a_waiting_reader_gets_a_live_frame() -> None:
    buffer = FrameBuffer()
    task = await _parked(buffer.read_from(0))
    buffer.append(A)
    assert await asyncio.wait_for(task, WAIT_S) == A


async def test_frames_appended_while_a_reader_waits_arrive_as_one_batch() -> None:
    buffer = FrameBuffer()
    task = await _parked(buffer.read_from(0))
    buffer.append(A)
    buffer.append(B)
    assert await asyncio.wait_for(task, WAIT_S) == A + B


async def test_a_live_reader_gets_every_frame_once() -> None:
    buffer = FrameBuffer()
    reader = buffer.read_from(0)
    seen: list[bytes] = []
    for f in (A, B, C):
        task = await _parked(reader)
        buffer.append(f)
        seen.append(await asyncio.wait_for(task, WAIT_S))
    buffer.end()
    seen.append(await _next(reader))
    assert seen == [A, B, C, DONE]


async def test_the_reader_stops_after_done() -> None:
    buffer = FrameBuffer()
    buffer.end()
    reader = buffer.read_from(0)
    assert await _next(reader) == DONE
    with pytest.raises(StopAsyncIteration):
        await _next(reader)


async def test_end_wakes_a_waiting_reader_with_done() -> None:
    buffer = FrameBuffer()
    task = await _parked(buffer.read_from(0))
    buffer.end()
    assert await asyncio.wait_for(task, WAIT_S) == DONE


async def test_frames_before_end_are_read_before_done() -> None:
    buffer = FrameBuffer()
    reader = buffer.read_from(0)
    task = await _parked(reader)
    buffer.append(A)
    buffer.end()
    assert [await asyncio.wait_for(task, WAIT_S), await _next(reader)] == [A, DONE]


async def test_end_says_whether_it_ended_the_buffer() -> None:
    buffer = FrameBuffer()
    assert (buffer.end(), buffer.end()) == (True, False)


async def test_ending_twice_still_gives_one_done() -> None:
    buffer = FrameBuffer()
    buffer.append(A)
    buffer.end()
    buffer.end()
    assert await _drain(buffer.read_from(0)) == [A, DONE]


async def test_two_readers_read_independently() -> None:
    buffer = FrameBuffer()
    first, second = buffer.read_from(0), buffer.read_from(0)
    buffer.append(A)
    buffer.append(B)
    assert await _next(first) == A + B
    buffer.append(C)
    assert await _next(first) == C
    assert await _next(second) == A + B + C


async def test_one_append_wakes_every_waiting_reader() -> None:
    buffer = FrameBuffer()
    first = await _parked(buffer.read_from(0))
    second = await _parked(buffer.read_from(0))
    buffer.append(A)
    assert list(await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)) == [A, A]


async def test_the_buffer_counts_its_frames() -> None:
    buffer = FrameBuffer()
    buffer.append(A)
    buffer.append(B)
    assert len(buffer) == 2


# -- heartbeats --------------------------------------------------------------------------------


async def test_a_ping_comes_after_a_heartbeat_of_silence() -> None:
    buffer = FrameBuffer()
    task = await _parked(buffer.read_from(0))
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S, HEARTBEAT_S)
    assert await asyncio.wait_for(task, WAIT_S) == PING


async def test_no_ping_before_a_heartbeat_of_silence() -> None:
    buffer = FrameBuffer()
    task = await _parked(buffer.read_from(0))
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S - 0.01, HEARTBEAT_S)
    buffer.append(A)
    assert await asyncio.wait_for(task, WAIT_S) == A


async def test_a_frame_restarts_the_heartbeat_silence() -> None:
    buffer = FrameBuffer()
    reader = buffer.read_from(0)
    buffer.append(A)
    assert await _next(reader) == A
    task = await _parked(reader)
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S / 2, HEARTBEAT_S)
    buffer.append(B)
    assert await asyncio.wait_for(task, WAIT_S) == B


async def test_a_ping_restarts_the_heartbeat_silence() -> None:
    buffer = FrameBuffer()
    reader = buffer.read_from(0)
    first = await _parked(reader)
    start = buffer.last_frame_at
    buffer.ping_if_idle(start + HEARTBEAT_S, HEARTBEAT_S)
    assert await asyncio.wait_for(first, WAIT_S) == PING
    task = await _parked(reader)
    buffer.ping_if_idle(start + HEARTBEAT_S * 1.5, HEARTBEAT_S)
    buffer.append(A)
    assert await asyncio.wait_for(task, WAIT_S) == A


async def test_a_ping_is_not_a_frame() -> None:
    buffer = FrameBuffer()
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S, HEARTBEAT_S)
    assert len(buffer) == 0


async def test_no_ping_after_end() -> None:
    buffer = FrameBuffer()
    reader = buffer.read_from(0)
    buffer.end()
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S, HEARTBEAT_S)
    assert await _drain(reader) == [DONE]


async def test_pending_frames_are_read_before_a_ping() -> None:
    buffer = FrameBuffer()
    reader = buffer.read_from(0)
    task = await _parked(reader)
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S, HEARTBEAT_S)
    buffer.append(A)
    assert [await asyncio.wait_for(task, WAIT_S), await _next(reader)] == [A, PING]


async def test_a_reader_that_starts_later_gets_no_earlier_ping() -> None:
    buffer = FrameBuffer()
    buffer.ping_if_idle(buffer.last_frame_at + HEARTBEAT_S, HEARTBEAT_S)
    task = await _parked(buffer.read_from(0))
    buffer.append(A)
    assert await asyncio.wait_for(task, WAIT_S) == A
