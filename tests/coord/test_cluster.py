"""The coordination pieces on a real Redis Cluster (`redis_cluster`, 3 masters + 3 replicas),
in-process: the lease with its EventLog, the user slots, the EventLog writer and reader, and
the stop listener, including across a failover of the master they use."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio import RedisCluster

from app.config import RedisSettings
from app.coord.lock import Lease, refresh_all
from app.coord.redis import Keys, create_redis
from app.coord.slots import UserSlot
from app.stream.eventlog import EventLogWriter, read_log
from app.stream.sse import frame
from app.turns.registry import TurnRegistry
from app.turns.stops import FORGET, StopListener
from tests.coord.cluster import LocalCluster
from tests.serving import wait_until

KEYS = Keys(f"ctest-{uuid.uuid4().hex[:8]}")


def _cluster_client(cluster: LocalCluster, *, blocking_reads: bool = False) -> RedisCluster:
    client = create_redis(
        RedisSettings(url=cluster.url, cluster=True), blocking_reads=blocking_reads
    )
    assert isinstance(client, RedisCluster)
    return client


@pytest.fixture
async def commands(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """The commands' client, having learnt every node (its URL names one, which may be killed)."""
    client = await _cluster_client(redis_cluster).initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def readers(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """The readers' client, as the app makes it; no command has run on it yet."""
    client = _cluster_client(redis_cluster, blocking_reads=True)
    yield client
    await client.aclose()


async def test_a_lease_its_eventlog_and_a_user_slot_work_on_the_cluster(
    commands: RedisCluster, readers: RedisCluster
) -> None:
    sid, turn = f"s-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    lease = Lease(commands, KEYS.session_lease(sid), 10_000, owner="a")
    log_key = KEYS.turn_events(sid, turn)
    assert await lease.acquire(log_key, 60)
    assert not await Lease(commands, lease.key, 10_000, owner="b").acquire()
    slot = UserSlot(commands, KEYS.user_turns("alice"), sid, turn, 10_000)
    assert await slot.take(1)
    assert not await UserSlot(commands, slot.key, "other", "t", 10_000).take(1)
    assert await refresh_all(commands, [lease], [slot]) == [True]

    writer = EventLogWriter(commands, 0.01, 60)  # the Cluster path: a pipeline of XADDs
    frames = [frame(0, {"type": "start"}), frame(1, {"type": "finish"})]
    for encoded in frames:
        writer.append(log_key, encoded)
    writer.end(log_key)
    await writer.flush()
    read = [data async for data in read_log(readers, log_key, -1, 500) if data is not None]
    assert b"".join(read) == b"".join(frames)
    assert 0 < await commands.ttl(log_key) <= 60

    await slot.release()
    assert await lease.release()
    assert not await commands.exists(lease.key)


async def test_the_stop_listener_subscribes_on_a_cluster_client_that_has_run_no_command(
    commands: RedisCluster, readers: RedisCluster
) -> None:
    # The readers' client had no slot map until some resume ran a command on it: the
    # listener failed with `KeyError: <slot>` and every replica missed every stop.
    forgotten: asyncio.Queue[str] = asyncio.Queue()
    listener = StopListener(readers, KEYS, TurnRegistry(), forgotten.put)
    listener.start()
    try:
        await asyncio.wait_for(listener.subscribed.wait(), 10)
        await commands.publish(KEYS.stop_channel("s-1"), FORGET)
        assert await asyncio.wait_for(forgotten.get(), 10) == "s-1"
    finally:
        await listener.close()


async def test_the_stop_listener_follows_a_kill_of_the_node_it_listens_on(
    redis_cluster: LocalCluster, commands: RedisCluster, readers: RedisCluster
) -> None:
    forgotten: asyncio.Queue[str] = asyncio.Queue()
    listener = StopListener(readers, KEYS, TurnRegistry(), forgotten.put)
    listener.start()
    pattern = KEYS.stop_pattern()
    killed: list[int] = []
    try:
        await asyncio.wait_for(listener.subscribed.wait(), 10)
        old, new = await asyncio.to_thread(redis_cluster.kill_master_of, pattern)
        killed.append(old)
        await asyncio.to_thread(redis_cluster.wait_promoted, pattern, new)
        # Every message published from now on must arrive: wait until one does.
        async with asyncio.timeout(20):
            while True:
                try:
                    await commands.publish(KEYS.stop_channel("s-2"), FORGET)
                    got = await asyncio.wait_for(forgotten.get(), 0.5)
                    break
                except (TimeoutError, redis.RedisError):
                    continue
        assert got == "s-2"
    finally:
        await listener.close()
        for port in killed:
            await asyncio.to_thread(redis_cluster.restart, port)


async def test_a_reader_blocked_on_a_master_that_hands_over_reads_on(
    redis_cluster: LocalCluster, commands: RedisCluster, readers: RedisCluster
) -> None:
    # A master turned replica ends the `XREAD BLOCK`s on it with `UNBLOCKED`: the resumed
    # stream used to end there, with an error, in the middle of the turn.
    sid = f"s-{uuid.uuid4().hex[:8]}"
    key = KEYS.turn_events(sid, str(uuid.uuid4()))
    await commands.xadd(key, {b"d": b""})
    master = redis_cluster.node(redis_cluster.shard_of(key).master)
    log = read_log(readers, key, -1, 2000)
    first = asyncio.ensure_future(anext(log))
    try:

        def blocked() -> bool:
            return int(master.info("clients")["blocked_clients"]) > 0

        await asyncio.to_thread(wait_until, blocked, 10)
        await asyncio.to_thread(redis_cluster.failover, key)
        assert await asyncio.wait_for(first, 10) is None  # a quiet block, not an error
        sent = frame(0, {"type": "start"})
        await commands.xadd(key, {b"d": sent})
        async with asyncio.timeout(10):
            while (data := await anext(log)) is None:
                pass
        assert data == sent
    finally:
        first.cancel()
        await log.aclose()
        await commands.delete(key)
