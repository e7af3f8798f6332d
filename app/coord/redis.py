"""The Redis client (single node or Cluster) and the key layout.

Every key of one chat session carries the hash tag `{<session_id>}` so that a Lua script over
a session's keys stays in one Cluster slot.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.config import RedisSettings

# An EventLog reader's `XREAD BLOCK` lasts at most `READ_BLOCK_MAX_S`, and the readers' client
# waits for a reply `READ_MARGIN_S` longer: with redis-py's default socket timeout (5 s) a
# longer block was taken for a dead connection and cut the resumed stream.
READ_BLOCK_MAX_S = 2.0
READ_MARGIN_S = 5.0


# What a Redis call can raise when Redis, or the path to it, fails. redis-py's Cluster client
# raises `RedisClusterException` (not a `RedisError`) when no node answers or a slot has no
# master yet, as happens for a moment during a failover.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

# Replies of a node that is changing role or catching up: the same call succeeds a moment
# later (on the node the client then finds). `UNBLOCKED`: a master turned into a replica (a
# Cluster failover) ends the `XREAD BLOCK`s waiting on it with this error.
_TRANSIENT_REPLIES = ("UNBLOCKED", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")


def is_transient(exc: BaseException) -> bool:
    """Whether a Redis failure is one a restart or a failover explains: worth trying again."""
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return False
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return True
    if isinstance(exc, (ClusterDownError, TryAgainError, RedisClusterException)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


def create_redis(
    settings: RedisSettings, url: str | None = None, *, blocking_reads: bool = False
) -> Redis | RedisCluster:
    """A client for the configured Redis; Cluster when `COPILOT_REDIS_CLUSTER` is set.

    Commands share a small blocking pool: under a burst they wait for a connection instead of
    opening hundreds (redis-py's default pool fails past 100). `blocking_reads` gives the
    client of EventLog readers instead, whose `XREAD BLOCK` holds a connection per reader.

    On a Cluster, redis-py keeps a pool per node, which fails rather than waits when full
    (`max_connections` is per node), and retries a command that met a dead node at once,
    without a pause: its retries are spent long before a replica is promoted. What must ride
    out a failover retries by itself (the EventLog writer and readers, the stop listener, the
    lease's release); a request that meets one gets 503 `dependency_unavailable`.
    """
    target = url or settings.url
    if not target:
        raise RuntimeError("no Redis URL: set REDIS_URL or let `copilot serve` embed one")
    size = settings.max_readers if blocking_reads else settings.max_connections
    # No CLIENT SETINFO on connect: two round trips per new connection, for a name.
    options: dict[str, Any] = {"driver_info": None, "socket_keepalive": True}
    if blocking_reads:
        options["socket_timeout"] = READ_BLOCK_MAX_S + READ_MARGIN_S
    if settings.cluster:
        return RedisCluster.from_url(
            target, decode_responses=False, max_connections=size, **options
        )
    pool = BlockingConnectionPool.from_url(
        target,
        max_connections=size,
        timeout=settings.pool_timeout_s,
        health_check_interval=30,
        **options,
    )
    return Redis(connection_pool=pool, decode_responses=False)


class Keys:
    """Key names, all under one prefix, per-session keys hash-tagged by session id."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session_lease(self, session_id: str) -> str:
        """The lock a running turn holds on its session."""
        return f"{self.prefix}:{{{session_id}}}:lease"

    def user_turns(self, user_id: str) -> str:
        """The slots of one user's running turns (a sorted set; see `app/coord/slots.py`)."""
        return f"{self.prefix}:user:{{{user_id}}}:turns"

    def turn_events(self, session_id: str, turn_id: str) -> str:
        """The EventLog (a Redis Stream) of one turn."""
        return f"{self.prefix}:{{{session_id}}}:events:{turn_id}"

    def stop_channel(self, session_id: str) -> str:
        """Pub/sub channel carrying stop signals for the session's turn."""
        return f"{self.prefix}:{{{session_id}}}:stop"

    def stop_pattern(self) -> str:
        """The glob pattern of every session's stop channel under this prefix."""
        prefix = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{prefix}:{{*}}:stop"

    def session_of_stop_channel(self, channel: str) -> str | None:
        """The session id in a stop channel's name (None for another name)."""
        head, tail = f"{self.prefix}:{{", "}:stop"
        if channel.startswith(head) and channel.endswith(tail):
            return channel[len(head) : -len(tail)] or None
        return None
