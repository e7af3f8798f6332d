"""The Redis client (single node or Cluster) and the key layout.

Every key of one chat session carries the hash tag `{<session_id>}` so that a Lua script over
a session's keys stays in one Cluster slot.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from app.config import RedisSettings

RedisClient: TypeAlias = "Redis | RedisCluster"


def create_redis(settings: RedisSettings, url: str | None = None) -> Redis | RedisCluster:
    """A client for the configured Redis; Cluster when `COPILOT_REDIS_CLUSTER` is set."""
    target = url or settings.url
    if not target:
        raise RuntimeError("no Redis URL: set REDIS_URL or let `copilot serve` embed one")
    if settings.cluster:
        return RedisCluster.from_url(
            target, decode_responses=False, max_connections=settings.max_connections
        )
    # A blocking pool: under a burst, callers wait for a connection instead of failing with
    # "Too many connections" (redis-py's default pool raises past 100).
    pool = BlockingConnectionPool.from_url(
        target,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        health_check_interval=30,
        socket_keepalive=True,
    )
    return Redis(connection_pool=pool, decode_responses=False)


class Keys:
    """Key names, all under one prefix, per-session keys hash-tagged by session id."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session_lease(self, session_id: str) -> str:
        """The lock a running turn holds on its session."""
        return f"{self.prefix}:{{{session_id}}}:lease"

    def turn_events(self, session_id: str, turn_id: str) -> str:
        """The EventLog (a Redis Stream) of one turn."""
        return f"{self.prefix}:{{{session_id}}}:events:{turn_id}"

    def active_turn(self, session_id: str) -> str:
        """Which turn of the session is running (for resume on any replica)."""
        return f"{self.prefix}:{{{session_id}}}:active"

    def stop_channel(self, session_id: str) -> str:
        """Pub/sub channel carrying stop signals for the session's turn."""
        return f"{self.prefix}:{{{session_id}}}:stop"
