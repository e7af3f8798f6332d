"""A lease in Redis: `SET NX PX` with an owner token; Lua compare-and-set refresh and release."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis, RedisCluster

_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """Exclusive ownership of `key` for `ttl_ms`, kept alive by `refresh()`."""

    def __init__(
        self, redis: Redis | RedisCluster, key: str, ttl_ms: int, owner: str | None = None
    ) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = (owner or "") + ":" + secrets.token_hex(8)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def refresh(self) -> bool:
        """Extend the lease; False when it was lost (expired and maybe taken by another)."""
        result = await self.redis.eval(_REFRESH, 1, self.key, self.token, self.ttl_ms)
        return bool(result)

    async def release(self) -> bool:
        """Give the lease up if still ours."""
        result = await self.redis.eval(_RELEASE, 1, self.key, self.token)
        return bool(result)

    async def holder(self) -> str | None:
        """The token of whoever holds the lease now."""
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value
