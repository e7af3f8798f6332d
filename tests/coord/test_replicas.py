"""The replica directory: who is live, who is known, in Redis's clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis

from app.coord.replicas import ReplicaDirectory


@pytest_asyncio.fixture
async def directory(redis_url: str) -> AsyncIterator[ReplicaDirectory]:
    client = Redis.from_url(redis_url)
    try:
        yield ReplicaDirectory(client, f"dir-{uuid.uuid4().hex[:8]}")
    finally:
        await client.aclose()


async def test_a_stale_replica_is_known_but_not_live(directory: ReplicaDirectory) -> None:
    await directory.announce("fresh", {"id": "fresh", "running_turns": 2})
    await directory.announce("stopped", {"id": "stopped"}, age_s=30)
    assert [r["id"] for r in await directory.live(stale_s=10)] == ["fresh"]
    known = await directory.known()
    assert set(known) == {"fresh", "stopped"}
    assert known["fresh"][0]["running_turns"] == 2
    assert known["stopped"][1] >= 30


async def test_a_replica_unheard_of_for_an_hour_is_forgotten(directory: ReplicaDirectory) -> None:
    await directory.announce("ancient", {"id": "ancient"}, age_s=3601)
    await directory.announce("recent", {"id": "recent"})
    assert set(await directory.known()) == {"recent"}
    assert await directory.redis.hkeys(directory.keys[0]) == [b"recent"]
