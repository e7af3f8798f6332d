"""What turns on this replica share, built once in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.coord.redis import Keys
from app.store.queue import MessageQueue
from app.turns.admission import AdaptiveGate
from app.turns.reaper import Reaper
from app.turns.registry import TurnRegistry
from app.turns.runner import TurnServices
from app.turns.stops import StopListener, TurnStopper
from app.turns.titles import TitleWriter


@dataclass
class TurnContext:
    """The turn machinery of this replica."""

    services: TurnServices
    registry: TurnRegistry
    replica_id: str
    titles: TitleWriter | None
    # Admission of new turns (`app.turns.admission`, at most COPILOT_START_CONCURRENCY): under
    # a burst the replica finishes the starts it took on (lease, first rows) before taking on
    # more, instead of interleaving every start on the one event loop; see ARCHITECTURE.md.
    starts: AdaptiveGate
    stops: StopListener
    stopper: TurnStopper
    redis: Redis | RedisCluster
    keys: Keys
    sessions: async_sessionmaker[AsyncSession]
    reaper: Reaper
    queue: MessageQueue
    # Whether this replica drains (it starts no turn of a session's queue then).
    draining: Callable[[], bool]
