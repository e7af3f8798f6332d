"""The SDK's SessionStore over transcript_entries: keyed by our session id, append-only per
generation, the newest generation resumed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from app.store.db import connect_args
from app.store.transcripts import PostgresTranscripts, TranscriptPosition
from app.store.turn_rows import TurnRows


@pytest_asyncio.fixture
async def transcripts(database_url: str) -> AsyncIterator[PostgresTranscripts]:
    rows = await TurnRows.open(database_url, 2, connect_args(database_url))
    store = PostgresTranscripts(rows.pool)
    try:
        yield store
    finally:
        await rows.close()


async def _session(store: PostgresTranscripts) -> str:
    session_id = f"s-{uuid.uuid4().hex[:12]}"
    await store.pool.execute("INSERT INTO chat_sessions (id, user_id) VALUES ($1, 'u')", session_id)
    return session_id


def _entries(cli_id: str, *names: str) -> list[Any]:
    return [
        {"type": "user", "uuid": str(uuid.uuid4()), "sessionId": cli_id, "text": name}
        for name in names
    ]


async def test_a_session_without_entries_has_no_position(
    transcripts: PostgresTranscripts,
) -> None:
    session_id = await _session(transcripts)
    assert await transcripts.position(session_id) is None
    bound = transcripts.bind(session_id, None)
    assert await bound.load({"project_key": "p", "session_id": "x"}) is None


async def test_appends_in_order_and_loads_whatever_the_project_key(
    transcripts: PostgresTranscripts,
) -> None:
    session_id = await _session(transcripts)
    cli_id = str(uuid.uuid4())
    store = transcripts.fresh(session_id, None)
    first, second = _entries(cli_id, "a", "b"), _entries(cli_id, "c")
    await store.append({"project_key": "-srv-a", "session_id": cli_id}, first)
    await store.append({"project_key": "-srv-a", "session_id": cli_id}, second)
    assert store.position == TranscriptPosition(0, 3)
    position = await transcripts.position(session_id)
    assert position == TranscriptPosition(0, 3, cli_id)
    # Another replica: another workspace root, so another project key.
    other = transcripts.bind(session_id, position)
    loaded = await other.load({"project_key": "-srv-b", "session_id": cli_id})
    assert loaded == first + second
    assert other.last_seq == 3


async def test_subagent_transcripts_are_not_mixed_into_the_main_one(
    transcripts: PostgresTranscripts,
) -> None:
    session_id = await _session(transcripts)
    store = transcripts.fresh(session_id, None)
    key: Any = {"project_key": "p", "session_id": "x", "subpath": "subagents/agent-1"}
    await store.append(key, _entries("x", "side"))
    assert await transcripts.position(session_id) is None
    assert await store.load(key) is None


async def test_a_fresh_generation_hides_the_old_one(transcripts: PostgresTranscripts) -> None:
    session_id = await _session(transcripts)
    old = transcripts.fresh(session_id, None)
    await old.append({"project_key": "p", "session_id": "a"}, _entries("a", "1", "2"))
    previous = await transcripts.position(session_id)
    new = transcripts.fresh(session_id, previous)
    assert new.generation == 1
    entries = _entries("b", "3")
    await new.append({"project_key": "p", "session_id": "b"}, entries)
    position = await transcripts.position(session_id)
    assert position == TranscriptPosition(1, 1, "b")
    assert (
        await transcripts.bind(session_id, position).load({"project_key": "p", "session_id": "b"})
        == entries
    )


async def test_delete_removes_every_generation(transcripts: PostgresTranscripts) -> None:
    session_id = await _session(transcripts)
    store = transcripts.fresh(session_id, None)
    await store.append({"project_key": "p", "session_id": "a"}, _entries("a", "1"))
    await transcripts.delete(session_id)
    assert await transcripts.position(session_id) is None


async def test_a_rolled_back_attempt_leaves_the_transcript_as_it_was(
    transcripts: PostgresTranscripts,
) -> None:
    session_id = await _session(transcripts)
    key: Any = {"project_key": "p", "session_id": "a"}
    store = transcripts.fresh(session_id, None)
    await store.append(key, _entries("a", "1", "2"))
    before = store.position
    await store.append(key, _entries("a", "too long", "compacted"))
    newer = transcripts.fresh(session_id, await transcripts.position(session_id))
    await newer.append({"project_key": "p", "session_id": "b"}, _entries("b", "x"))
    await transcripts.roll_back(session_id, before)
    assert await transcripts.position(session_id) == TranscriptPosition(0, 2, "a")
    loaded = await transcripts.bind(session_id, before).load(key)
    assert [e["text"] for e in loaded or []] == ["1", "2"]
