"""The EventLog read by a resumed stream on another replica."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

from app.config import RedisSettings
from app.coord.redis import READ_BLOCK_MAX_S, create_redis
from app.stream.eventlog import read_log


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
