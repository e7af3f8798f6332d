"""The per-user slot script on the test Redis: counted by session, atomic, self-healing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.coord.lock import refresh_all
from app.coord.redis import Keys
from app.coord.slots import UserSlot

TTL_MS = 60_000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def key() -> str:
    return Keys(f"slots-{uuid.uuid4().hex[:8]}").user_turns("alice")


def slot(redis: Redis, key: str, session: str, ttl_ms: int = TTL_MS) -> UserSlot:
    return UserSlot(redis, key, session, str(uuid.uuid4()), ttl_ms)


async def test_a_user_at_the_cap_is_refused_and_nothing_is_written(redis: Redis, key: str) -> None:
    assert await slot(redis, key, "s1").take(2)
    assert await slot(redis, key, "s2").take(2)
    before = await redis.zrange(key, 0, -1)
    assert not await slot(redis, key, "s3").take(2)
    assert await redis.zrange(key, 0, -1) == before
    assert 0 < await redis.pttl(key) <= TTL_MS


async def test_a_released_slot_frees_a_place(redis: Redis, key: str) -> None:
    first = slot(redis, key, "s1")
    assert await first.take(1)
    assert not await slot(redis, key, "s2").take(1)
    await first.release()
    assert await slot(redis, key, "s2").take(1)


async def test_a_second_turn_of_the_same_session_is_not_refused_for_the_first(
    redis: Redis, key: str
) -> None:
    """`on_conflict: "interrupt"` replaces a turn: the old one still holds its slot."""
    old = slot(redis, key, "s1")
    assert await old.take(1)
    new = slot(redis, key, "s1")
    assert await new.take(1)
    await old.release()  # the old turn ends after the new one took its place
    assert await redis.zrange(key, 0, -1) == [new.member.encode()]
    assert not await slot(redis, key, "s2").take(1)


async def test_an_unrefreshed_slot_expires_and_frees_its_place(redis: Redis, key: str) -> None:
    assert await slot(redis, key, "dead", ttl_ms=200).take(1)
    assert not await slot(redis, key, "s2").take(1)
    await asyncio.sleep(0.3)  # the dead replica's slot is past its expiry
    assert await slot(redis, key, "s2").take(1)
    assert len(await redis.zrange(key, 0, -1)) == 1


async def test_a_refreshed_slot_outlives_its_first_expiry(redis: Redis, key: str) -> None:
    held = slot(redis, key, "s1", ttl_ms=2000)
    assert await held.take(1)
    for _ in range(3):  # 2.4 s in all; a refresh is late only past 1.2 s
        await asyncio.sleep(0.8)
        await refresh_all(redis, [], [held])
    assert not await slot(redis, key, "s2").take(1)


async def test_a_released_slot_is_not_brought_back_by_a_refresh(redis: Redis, key: str) -> None:
    held = slot(redis, key, "s1")
    assert await held.take(1)
    await held.release()
    await refresh_all(redis, [], [held])
    assert await redis.exists(key) == 0


async def test_racing_takes_for_the_last_slots_let_exactly_the_cap_in(
    redis: Redis, key: str
) -> None:
    taken = await asyncio.gather(*(slot(redis, key, f"s{n}").take(3) for n in range(20)))
    assert sum(taken) == 3
    assert len(await redis.zrange(key, 0, -1)) == 3
