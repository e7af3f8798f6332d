"""Per-user turn slots in Redis: how many turns one user runs at once, across replicas.

One sorted set per user; a member per running turn, `<session_id>:<turn_id>`, scored by the
time (Redis's clock, in ms) it expires. A slot is refreshed with its session's lease and lives
as long: a replica that dies mid-turn stops refreshing, and its slots fall out when the next
take prunes expired members, so the count heals by itself. Members are counted by session,
not by turn: a session runs one turn at a time, and a turn that replaces another of the same
session (`on_conflict: "interrupt"`) must not be refused for the slot the old one still holds.

The check and the take are one Lua script, so two replicas racing for the last slot cannot
both win. Session ids never hold `:` (their pattern is `[A-Za-z0-9_-]`).
"""

from __future__ import annotations

import functools
import logging

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from app.coord.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

# KEYS[1] the user's slots; ARGV member, its session id, the cap, the slot's ttl in ms.
# Returns 1 when the slot is taken, 0 when the user is at the cap.
_TAKE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local sessions, count, same = {}, 0, false
for _, member in ipairs(redis.call('zrange', KEYS[1], 0, -1)) do
  local session = string.match(member, '^([^:]*):')
  if session == ARGV[2] then
    same = true
  elseif not sessions[session] then
    sessions[session] = true
    count = count + 1
  end
end
if not same and count >= tonumber(ARGV[3]) then
  return 0
end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[4])
return 1
"""

# Pushes a held slot's expiry (and the set's) ttl ms ahead; a slot already gone stays gone.
_REFRESH = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changed = redis.call('zadd', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
if changed == 1 then
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return changed
"""


@functools.cache
def _take_script(redis: Redis | RedisCluster) -> AsyncScript:
    """The take script of a client, sent by SHA once Redis knows it."""
    return redis.register_script(_TAKE)


class UserSlot:
    """One turn's place among its user's running turns (`COPILOT_MAX_ACTIVE_TURNS_PER_USER`)."""

    def __init__(
        self, redis: Redis | RedisCluster, key: str, session_id: str, turn_id: str, ttl_ms: int
    ) -> None:
        self.redis = redis
        self.key = key
        self.session_id = session_id
        self.member = f"{session_id}:{turn_id}"
        self.ttl_ms = ttl_ms

    async def take(self, cap: int) -> bool:
        """Take the slot if the user runs fewer than `cap` turns in other sessions."""
        script = _take_script(self.redis)
        result = await script([self.key], [self.member, self.session_id, cap, self.ttl_ms])
        return bool(result)

    async def release(self) -> None:
        """Give the slot up (a slot already gone: nothing). If Redis cannot be reached, the
        slot, no longer refreshed, expires with the session's lease."""
        try:
            await self.redis.zrem(self.key, self.member)
        except REDIS_ERRORS as exc:
            log.warning("user slot %s not released: %s", self.member, exc)

    def refresh_args(self) -> tuple[str, int, str, str, int]:
        """The `EVAL` arguments that refresh this slot, for a pipeline."""
        return (_REFRESH, 1, self.key, self.member, self.ttl_ms)
