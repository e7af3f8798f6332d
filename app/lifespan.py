"""Opens every client when the app starts and closes them, in reverse order, when it stops."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis, RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.auth import Authenticator
from app.config import Settings
from app.coord.redis import Keys, create_redis
from app.store.db import create_engine, create_session_factory

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """Everything a request or a turn reaches: opened in the lifespan, typed, never global."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis | RedisCluster
    keys: Keys
    auth: Authenticator
    extras: dict[str, Any] = field(default_factory=dict)


def lifespan_for(settings: Settings) -> Any:
    """The lifespan context of an app built for `settings`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            engine = create_engine(settings.database)
            stack.push_async_callback(engine.dispose)
            redis = create_redis(settings.redis)
            stack.push_async_callback(redis.aclose)
            state = AppState(
                settings=settings,
                engine=engine,
                sessions=create_session_factory(engine),
                redis=redis,
                keys=Keys(settings.redis.key_prefix),
                auth=Authenticator(settings.auth),
            )
            app.state.copilot = state
            log.info("copilot-server ready (auth: %s)", "local" if state.auth.local else "on")
            yield

    return lifespan
