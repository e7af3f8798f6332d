"""The EventLog read by a resumed stream on another replica."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from app.config import RedisSettings
from app.coord.redis import READ_BLOCK_MAX_S, create_redis
from app.stream.eventlog import EventLogGap, continuation, frames_after, read_log
from app.stream.sse import frame, frame_seq


async def test_a_reader_blocks_less_long_than_its_clients_socket_timeout(redis_url: str) -> None:
    # A block of a whole heartbeat (10 s) outlived redis-py's default 5 s socket timeout.
    readers = create_redis(RedisSettings(url=redis_url), blocking_reads=True)
    assert isinstance(readers, Redis)
    key = f"test-log-{uuid.uuid4().hex[:8]}"
    await readers.xadd(key, {b"d": b""})
    try:
        timeout = readers.connection_pool.connection_kwargs["socket_timeout"]
        assert timeout > READ_BLOCK_MAX_S
        started = time.monotonic()
        log = read_log(readers, key, -1, block_ms=60_000)
        idle = await anext(log)
        await log.aclose()
        assert idle is None
        assert time.monotonic() - started < timeout
    finally:
        await readers.delete(key)
        await readers.aclose()


def _entry(*seqs: int) -> bytes:
    return b"".join(
        frame(seq, {"type": "text-delta", "id": "t", "delta": str(seq)}) for seq in seqs
    )


def test_a_reader_behind_the_log_gets_the_closing_entry_as_numbered() -> None:
    entries = [{b"d": _entry(0, 1, 2, 3)}, {b"d": _entry(4, 5), b"e": b"1", b"c": b"1"}]
    assert [frame_seq(f) for f in frames_after(entries, 1)[0]] == [2, 3, 4, 5]


def test_a_reader_ahead_of_the_log_gets_the_closing_entry_whole_numbered_after_its_own() -> None:
    # It got frames 4 and 5 from the replica that died before they reached the log: the
    # reaper's closing frames, numbered 4 and 5 in the log, come to it as 6 and 7.
    entries = [{b"d": _entry(0, 1, 2, 3)}, {b"d": _entry(4, 5), b"e": b"1", b"c": b"1"}]
    closing = frames_after(entries, 5)[0]
    assert [frame_seq(f) for f in closing] == [6, 7]
    assert [orjson.loads(f.split(b"data: ", 1)[1])["delta"] for f in closing] == ["4", "5"]


def test_a_reader_from_the_start_gets_frame_zero() -> None:
    entries = [{b"d": _entry(0, 1)}, {b"d": _entry(2), b"e": b"1", b"c": b"1"}]
    assert [frame_seq(f) for f in frames_after(entries, -1)[0]] == [0, 1, 2]


def test_an_ordinary_last_entry_is_filtered_by_number() -> None:
    entries = [{b"d": _entry(0, 1, 2, 3), b"e": b"1"}]
    assert frames_after(entries, 5) == ([], 5, False)


def _frames(*seqs: int) -> list[bytes]:
    return [frame(seq, {"type": "text-delta", "id": "t", "delta": f"w{seq}"}) for seq in seqs]


def test_the_continuation_of_a_log_skips_what_was_sent_and_what_is_stored_twice() -> None:
    # An append retried after a failover may have been stored the first time too.
    frames, last, hole = continuation(_frames(0, 1, 2, 1, 2, 3), 0)
    assert frames == _frames(1, 2, 3)
    assert (last, hole) == (3, False)


def test_the_continuation_of_a_log_stops_at_a_hole() -> None:
    # A failover can lose the last appends the old master acknowledged.
    frames, last, hole = continuation(_frames(0, 1, 4, 5), -1)
    assert frames == _frames(0, 1)
    assert (last, hole) == (1, True)


async def _read_into(got: list[bytes], log: AsyncIterator[bytes | None]) -> None:
    async for data in log:
        if data is not None:
            got.append(data)


async def test_a_reader_sends_each_frame_once_and_raises_at_a_hole(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    key = f"test-log-{uuid.uuid4().hex[:8]}"
    for seqs in [(0, 1), (1, 2), (4,)]:
        await client.xadd(key, {b"d": b"".join(_frames(*seqs))})
    try:
        got: list[bytes] = []
        with pytest.raises(EventLogGap):
            await _read_into(got, read_log(client, key, -1, block_ms=100))
        assert b"".join(got) == b"".join(_frames(0, 1, 2))
    finally:
        await client.delete(key)
        await client.aclose()
