"""The replicas of this fleet, for operators and for the reaper: each replica announces itself
in Redis when it starts and every reaper period.

Two keys under one hash tag (one Cluster slot): a hash of replica id to its latest report
(JSON) and a sorted set of replica id to when Redis last heard from it, in Redis's own clock
(`TIME` inside the script), so replicas whose clocks disagree still agree on who is live. A
replica heard from within `stale_s` is live. One not heard from for `FORGET_S` is forgotten
by the next reader.

The reaper reaps only turns of replicas this set knows (live or not): a replica of another
deployment sharing the database under another key prefix never announces here, so its turns,
whose leases this prefix cannot see, are never taken for orphans.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

FORGET_S = 3600  # a replica unheard of this long is dropped (its orphans were reaped long ago)

_ANNOUNCE = """
local now = redis.call('time')
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[2], now[1] + now[2] / 1e6 - ARGV[3], ARGV[1])
return 1
"""

# Forgets replicas unheard of for ARGV[1] s; then every known replica's id, its report and its
# age in seconds, oldest announcement first.
_KNOWN = """
local now = redis.call('time')
local t = now[1] + now[2] / 1e6
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', '(' .. (t - ARGV[1]))
for _, id in ipairs(gone) do
  redis.call('hdel', KEYS[1], id)
  redis.call('zrem', KEYS[2], id)
end
local out = {}
local seen = redis.call('zrange', KEYS[2], 0, -1, 'withscores')
for i = 1, #seen, 2 do
  table.insert(out, seen[i])
  table.insert(out, redis.call('hget', KEYS[1], seen[i]) or '{}')
  table.insert(out, tostring(t - tonumber(seen[i + 1])))
end
return out
"""


@functools.cache
def _scripts(redis: Redis | RedisCluster) -> tuple[AsyncScript, AsyncScript]:
    return redis.register_script(_ANNOUNCE), redis.register_script(_KNOWN)


class ReplicaDirectory:
    """Where replicas announce themselves; who is live, and who was ever here lately."""

    def __init__(self, redis: Redis | RedisCluster, prefix: str) -> None:
        self.redis = redis
        self.keys = [f"{prefix}:{{replicas}}:reports", f"{prefix}:{{replicas}}:seen"]

    async def announce(self, replica_id: str, report: dict[str, Any], age_s: float = 0) -> None:
        """Record this replica's report, heard from `age_s` ago (a replica stopping cleanly
        announces itself as already stale: no longer live, still known)."""
        await _scripts(self.redis)[0](self.keys, [replica_id, orjson.dumps(report), age_s])

    async def known(self) -> dict[str, tuple[dict[str, Any], float]]:
        """Every replica heard from within `FORGET_S`: its report and age in seconds."""
        raw = await _scripts(self.redis)[1](self.keys, [FORGET_S])
        return {
            ident.decode(): (orjson.loads(report), max(float(age), 0.0))
            for ident, report, age in zip(raw[::3], raw[1::3], raw[2::3], strict=True)
        }

    async def live(self, stale_s: float) -> list[dict[str, Any]]:
        """The reports of replicas heard from within `stale_s`, each with `age_s` (seconds
        since it was heard from), oldest announcement first."""
        return [
            {**report, "age_s": round(age, 3)}
            for report, age in (await self.known()).values()
            if age < stale_s
        ]
