"""Engine and session factory; migrations run through Alembic's API."""

from __future__ import annotations

from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
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


def connect_args(url: str) -> dict[str, object]:
    """No TLS handshake attempt to a database on this machine, unless the URL asks for one."""
    parsed = make_url(url)
    if parsed.host in ("127.0.0.1", "localhost", "::1") and not {"ssl", "sslmode"} & set(
        parsed.query
    ):
        return {"ssl": False}
    return {}


def create_engine(settings: DatabaseSettings, url: str | None = None) -> AsyncEngine:
    """An asyncpg engine with a bounded pool and liveness checks."""
    target = url or settings.url
    if not target:
        raise RuntimeError("no database URL: set DATABASE_URL or let `copilot serve` embed one")
    return create_async_engine(
        target,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        # No pre-ping: it costs a round trip per checkout (a turn makes three). A connection
        # broken by a database restart fails one request (503) and the pool is invalidated.
        pool_recycle=1800,
        connect_args=connect_args(target),
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
