"""A lease in Redis: `SET NX PX` with an owner token; Lua compare-and-set refresh and release."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from app.coord.batching import Coalescer
from app.coord.redis import REDIS_ERRORS
from app.coord.slots import UserSlot

# Takes the lease and, when a second key is given, creates that stream (one empty entry, a TTL)
# in the same round trip: a turn's EventLog must exist before the turn is visible.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if #KEYS == 2 then
    redis.call('xadd', KEYS[2], '*', ARGV[4], '')
    redis.call('expire', KEYS[2], ARGV[3])
  end
  return 1
end
return 0
"""

_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# Gives the lease up if still ours and, with it, any further keys (a refused start's EventLog).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', unpack(KEYS))
end
return 0
"""


async def refresh_all(
    redis: Redis | RedisCluster, leases: list[Lease], slots: Sequence[UserSlot] = ()
) -> list[bool]:
    """Refresh many leases, and the user slots of their turns, in one pipeline; which
    leases are still held."""
    pipe = redis.pipeline(transaction=False)
    for lease in leases:
        pipe.eval(_REFRESH, 1, lease.key, lease.token, lease.ttl_ms)
    for slot in slots:
        pipe.eval(*slot.refresh_args())
    results = await pipe.execute()
    return [bool(result) for result in results[: len(leases)]]


@functools.cache
def _scripts(redis: Redis | RedisCluster) -> tuple[AsyncScript, AsyncScript]:
    """The acquire and release scripts of a client, sent by SHA once Redis knows them."""
    return redis.register_script(_ACQUIRE), redis.register_script(_RELEASE)


_ACQUIRE_SHA = hashlib.sha1(_ACQUIRE.encode()).hexdigest()
Acquisition = tuple["Lease", str | None, int]


async def _acquire_batch(items: list[Acquisition]) -> list[bool | BaseException]:
    """Several acquisitions (of different sessions) in one pipeline of `EVALSHA`; an
    acquisition whose script Redis does not know yet (its first, or after a restart) goes
    again on its own, which loads it."""
    if len(items) == 1:
        lease, stream, ttl = items[0]
        return [await lease._acquire_alone(stream, ttl)]
    pipe = items[0][0].redis.pipeline(transaction=False)
    for lease, stream, ttl in items:
        keys, args = lease._acquire_args(stream, ttl)
        pipe.evalsha(_ACQUIRE_SHA, len(keys), *keys, *args)
    results = await pipe.execute(raise_on_error=False)
    answers: list[bool | BaseException] = []
    for (lease, stream, ttl), result in zip(items, results, strict=True):
        if isinstance(result, NoScriptError):
            try:
                answers.append(await lease._acquire_alone(stream, ttl))
            except Exception as exc:
                answers.append(exc)
        elif isinstance(result, BaseException):
            answers.append(result)
        else:
            answers.append(bool(result))
    return answers


@functools.cache
def _acquirer(redis: Redis | RedisCluster) -> Coalescer[Acquisition, bool]:
    """The acquisitions of one client, batched while one is in flight."""
    return Coalescer(_acquire_batch)


# Releases retried in the background (referenced here until they end).
_BACKGROUND: set[asyncio.Task[None]] = set()

STREAM_FIELD = "d"  # the field of an EventLog entry that holds frames


class Lease:
    """Exclusive ownership of `key` for `ttl_ms`, kept alive by `refresh_all()`."""

    def __init__(
        self, redis: Redis | RedisCluster, key: str, ttl_ms: int, owner: str | None = None
    ) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = (owner or "") + ":" + secrets.token_hex(8)

    async def acquire(self, stream: str | None = None, stream_ttl_s: int = 0) -> bool:
        """Take the lease if nobody holds it; then also create `stream` (same hash slot).
        Acquisitions made while another is in flight share one pipeline (`_acquirer`)."""
        return await _acquirer(self.redis)((self, stream, stream_ttl_s))

    async def _acquire_alone(self, stream: str | None, stream_ttl_s: int) -> bool:
        script = _scripts(self.redis)[0]
        result = await script(*self._acquire_args(stream, stream_ttl_s))
        return bool(result)

    def _acquire_args(self, stream: str | None, stream_ttl_s: int) -> tuple[list[str], list[Any]]:
        keys = [self.key, stream] if stream else [self.key]
        return keys, [self.token, self.ttl_ms, stream_ttl_s, STREAM_FIELD]

    async def release(self, *drop: str) -> bool:
        """Give the lease up if still ours, deleting the `drop` keys too (same hash slot)."""
        result = await _scripts(self.redis)[1]([self.key, *drop], [self.token])
        return bool(result)

    async def release_or_retry(self, *drop: str) -> None:
        """Give the lease up now; if Redis cannot be reached, keep trying in the background,
        so the session is free the moment Redis is back rather than when the lease expires."""
        try:
            await self.release(*drop)
        except REDIS_ERRORS:
            task = asyncio.create_task(self.release_eventually(drop=drop))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    async def release_eventually(self, retry_s: float = 0.5, drop: tuple[str, ...] = ()) -> None:
        """Give the lease up; while Redis cannot be reached, keep trying until the lease
        would have expired by itself (a release after that is a no-op: the token differs)."""
        deadline = time.monotonic() + self.ttl_ms / 1000
        while True:
            try:
                await self.release(*drop)
                return
            except REDIS_ERRORS:
                if time.monotonic() + retry_s >= deadline:
                    return
                await asyncio.sleep(retry_s)
