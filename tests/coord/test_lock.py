"""Leases taken together share a pipeline, each with its own answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis

from app.coord.lock import Lease, _acquirer


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_leases_taken_at_once_share_round_trips_and_each_gets_its_answer(
    redis_client: Redis,
) -> None:
    prefix = f"lock-{uuid.uuid4().hex[:8]}"
    held = [Lease(redis_client, f"{prefix}:{{h{i}}}:lease", 10_000) for i in range(3)]
    for lease in held:
        assert await lease.acquire()
    await redis_client.script_flush()  # the first batch meets NOSCRIPT: taken one by one
    fresh = [Lease(redis_client, f"{prefix}:{{f{i}}}:lease", 10_000) for i in range(20)]
    rivals = [Lease(redis_client, lease.key, 10_000) for lease in held]
    streams = [f"{prefix}:{{f{i}}}:events" for i in range(20)]
    batcher = _acquirer(redis_client)
    before = batcher.batches
    answers = await asyncio.gather(
        *(lease.acquire(stream, 60) for lease, stream in zip(fresh, streams, strict=True)),
        *(lease.acquire() for lease in rivals),
    )
    assert answers == [True] * 20 + [False] * 3
    assert batcher.batches - before < 23
    assert all([await redis_client.exists(stream) for stream in streams])
    for lease in fresh + held:
        assert await lease.release()
    # and again, with the script known: one pipeline for the batch
    again = [Lease(redis_client, f"{prefix}:{{g{i}}}:lease", 10_000) for i in range(10)]
    assert await asyncio.gather(*(lease.acquire() for lease in again)) == [True] * 10
    for lease in again:
        await lease.release()
