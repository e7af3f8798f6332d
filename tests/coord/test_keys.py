"""Key and channel names under a prefix."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from app.coord.redis import Keys


async def test_the_stop_pattern_gets_every_stop_channel_of_its_prefix_and_no_other(
    redis_url: str,
) -> None:
    keys = Keys("t[1]*")
    client = Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.psubscribe(keys.stop_pattern())
        for channel in (
            Keys("t1x").stop_channel("s-0"),  # what `t[1]*` would match unescaped
            keys.session_lease("s-1"),
            keys.stop_channel("s-2"),
        ):
            await client.publish(channel, b"turn")
        got: list[str | None] = []
        async with asyncio.timeout(5):
            while not got:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    got.append(keys.session_of_stop_channel(message["channel"].decode()))
        assert got == ["s-2"]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
