"""Engine and session factory; migrations run through Alembic's API."""

from __future__ import annotations

from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import DatabaseSettings

ROOT = Path(__file__).resolve().parents[2]


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: DatabaseSettings, url: str | None = None) -> AsyncEngine:
    """An asyncpg engine with a bounded pool and liveness checks."""
    target = url or settings.url
    if not target:
        raise RuntimeError("no database URL: set DATABASE_URL or let `copilot serve` embed one")
    return create_async_engine(
        target,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision` (blocking: call it off the event loop)."""
    command.upgrade(alembic_config(url), revision)
