"""Warm clients: closed when idle too long, and the least recently used first past the cap."""

from __future__ import annotations

import asyncio
import uuid

import psutil
import pytest

from app.store.transcripts import PostgresTranscripts
from tests.backends.claude_sdk.conftest import BackendFactory, collect, request, user

pytestmark = pytest.mark.claude_cli


async def _session(transcripts: PostgresTranscripts) -> str:
    sid = f"s-{uuid.uuid4().hex[:12]}"
    await transcripts.pool.execute("INSERT INTO chat_sessions (id, user_id) VALUES ($1, 'u')", sid)
    return sid


def _gone(pid: int | None) -> bool:
    assert pid is not None
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_past_the_cap_the_least_recently_used_client_closes(
    make_backend: BackendFactory, transcripts: PostgresTranscripts
) -> None:
    backend = make_backend(max_live=2)
    first, second, third = [await _session(transcripts) for _ in range(3)]
    pids = {}
    for sid in (first, second, third):
        await collect(backend, request(sid, user("hi")))
        pids[sid] = backend.pool.idle[sid].pid
    await backend.pool.drain()
    assert list(backend.pool.idle) == [second, third]
    assert _gone(pids[first])
    assert not _gone(pids[third])


async def test_an_idle_client_closes_after_idle_s(
    make_backend: BackendFactory, transcripts: PostgresTranscripts
) -> None:
    backend = make_backend(idle_s=0.5)
    sid = await _session(transcripts)
    await collect(backend, request(sid, user("hi")))
    pid = backend.pool.idle[sid].pid
    reaper = backend.pool._reaper
    assert reaper is not None
    async with asyncio.timeout(10):
        await reaper  # it ends once no client is left idle
    await backend.pool.drain()
    assert sid not in backend.pool.idle
    assert _gone(pid)
