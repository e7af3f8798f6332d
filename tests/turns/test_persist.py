"""The final write of a turn (real Postgres)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest_asyncio

from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.db import connect_args
from app.store.turn_rows import StartOrder, TurnEnd, TurnRows
from app.store.usage import Usage
from app.turns.persist import persist_final
from tests.serving import assert_well_formed, serve, stream, upstream_env


@pytest_asyncio.fixture
async def rows(database_url: str) -> AsyncIterator[TurnRows]:
    opened = await TurnRows.open(database_url, 2, connect_args(database_url))
    yield opened
    await opened.close()


async def _started(rows: TurnRows) -> TurnEnd:
    session_id, turn_id = f"persist-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    started = await rows.start(
        StartOrder(
            session_id=session_id,
            user_id="alice",
            turn_id=turn_id,
            user_message_id=f"u-{turn_id}",
            user_parts=[{"type": "text", "text": "hi"}],
            user_metadata={},
            assistant_message_id=f"a-{turn_id}",
            backend="anthropic",
            model="claude-sonnet-4-6",
            replica_id="test",
        )
    )

    assert started is not None
    now = datetime.now(UTC)
    return TurnEnd(
        session_id=session_id,
        turn_id=turn_id,
        message_id=f"a-{turn_id}",
        parts=[{"type": "text", "text": "a\x00b", "state": "done"}],
        message_status="complete",
        metadata={"model": "claude-sonnet-4-6"},
        status="completed",
        finish_reason="stop",
        error_code=None,
        error_message=None,
        attempt_log=[],
        first_token_at=now,
        finished_at=now,
        ttft_ms=1,
        duration_ms=2,
        usage=Usage(input_tokens=3, output_tokens=4),
        cost=Decimal(0),
    )


async def test_a_reply_the_database_refuses_is_stored_cleaned_at_once_not_retried(
    rows: TurnRows, database_url: str
) -> None:
    # Regression: U+0000 (refused by jsonb) made the final write retry a data error for ten
    # minutes while the session stayed busy.
    end = await _started(rows)
    slow: list[bool] = []
    started = time.monotonic()
    assert await persist_final(rows, end, lambda: slow.append(True)) == 0
    assert time.monotonic() - started < 5
    assert slow == []
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        turn = await conn.fetchrow(
            "SELECT status, error_code, error_message, output_tokens FROM turns WHERE id = $1",
            end.turn_id,
        )
        message = await conn.fetchrow(
            "SELECT status, parts::text FROM chat_messages WHERE message_id = $1", end.message_id
        )
        active = await conn.fetchval(
            "SELECT active_turn_id FROM chat_sessions WHERE id = $1", end.session_id
        )
    finally:
        await conn.close()
    assert turn["status"] == "failed"
    assert turn["error_code"] == "internal"
    assert "refused" in turn["error_message"]
    assert turn["output_tokens"] == 4
    assert message["status"] == "error"
    assert "a\ufffdb" in message["parts"]
    assert active is None


def test_a_reply_with_nul_and_a_lone_surrogate_completes_and_frees_the_session(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Regression: the final write retried jsonb's refusal of U+0000 for ten minutes (every
    # POST meanwhile 409), and orjson refused to encode a lone surrogate.
    sid = f"nul-{uuid.uuid4().hex[:8]}"
    env = upstream_env(fake.base_url, database_url, redis_url)
    with serve(env, tmp_path) as served, served.client() as http:
        reply = stream(
            http,
            "POST",
            "/api/v1/chat",
            json={"id": sid, "message": '[[fake:text text="a\\u0000b \\ud800c"]]'},
        )
        started = time.monotonic()
        after = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "next"})
        took = time.monotonic() - started
        messages = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
        turns = http.get(f"/api/v1/sessions/{sid}/turns").json()["turns"]
    assert_well_formed(reply)
    assert reply.text == "a\ufffdb \ufffdc"
    assert reply.chunks[-1]["finishReason"] == "stop"
    assert_well_formed(after)
    assert took < 10
    stored = [p["text"] for p in messages[1]["parts"] if p["type"] == "text"]
    assert stored == ["a\ufffdb \ufffdc"]
    assert [t["status"] for t in turns] == ["completed", "completed"]
