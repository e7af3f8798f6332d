"""The hot path of a turn in Postgres: one statement to start it, one per flush, one to end it.

Each is a single statement run in autocommit (atomic, with no BEGIN/COMMIT round trips), so a
turn costs three kinds of round trip whatever its length. Anything unusual (a retried message
id, another user's session, a leftover active turn) makes the start statement do nothing, and
the caller takes the general path (`app.turns.start`), which explains itself with a status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import DateTime, Integer, Numeric, String

from app.store.usage import Usage

_START = text(
    """
WITH sess AS (
    INSERT INTO chat_sessions AS s (id, user_id, last_seq, active_turn_id)
    VALUES (:session_id, :user_id, 2, :turn_id)
    ON CONFLICT (id) DO UPDATE
        SET last_seq = s.last_seq + 2, active_turn_id = :turn_id, updated_at = now()
        WHERE s.user_id = :user_id AND s.active_turn_id IS NULL
    RETURNING s.last_seq, s.title
), user_message AS (
    INSERT INTO chat_messages (session_id, seq, message_id, role, parts, metadata, status, turn_id)
    SELECT :session_id, last_seq - 1, :user_message_id, 'user', :user_parts, :user_metadata,
           'complete', :turn_id
    FROM sess
), assistant_message AS (
    INSERT INTO chat_messages (session_id, seq, message_id, role, parts, metadata, status, turn_id)
    SELECT :session_id, last_seq, :assistant_message_id, 'assistant', '[]', '{}', 'streaming',
           :turn_id
    FROM sess
), turn AS (
    INSERT INTO turns (id, session_id, user_message_id, assistant_message_id, trigger, status,
                       backend, model, replica_id)
    SELECT :turn_id, :session_id, :user_message_id, :assistant_message_id, 'submit-message',
           'running', :backend, :model, :replica_id
    FROM sess
)
SELECT sess.title, m.message_id, m.role, m.parts, m.metadata, m.created_at
FROM sess LEFT JOIN chat_messages m ON m.session_id = :session_id AND m.superseded_at IS NULL
ORDER BY m.seq
"""
).bindparams(
    bindparam("turn_id", type_=UUID(as_uuid=True)),
    bindparam("user_parts", type_=JSONB),
    bindparam("user_metadata", type_=JSONB),
)

_PARTIALS = text(
    """
UPDATE chat_messages AS m SET parts = r.parts, updated_at = now()
FROM jsonb_to_recordset(:replies) AS r(session_id text, message_id text, parts jsonb)
WHERE m.session_id = r.session_id AND m.message_id = r.message_id AND m.status = 'streaming'
"""
).bindparams(bindparam("replies", type_=JSONB))

_FINISH = text(
    """
WITH reply AS (
    UPDATE chat_messages
    SET parts = :parts, status = :message_status, metadata = :metadata, updated_at = now()
    WHERE session_id = :session_id AND message_id = :message_id
), turn AS (
    UPDATE turns SET status = :status, finish_reason = :finish_reason, error_code = :error_code,
        error_message = :error_message, attempts = :attempts, first_token_at = :first_token_at,
        finished_at = :finished_at, ttft_ms = :ttft_ms, duration_ms = :duration_ms,
        input_tokens = :input_tokens, output_tokens = :output_tokens,
        cache_read_tokens = :cache_read_tokens, cache_write_tokens = :cache_write_tokens,
        cost_usd = :cost_usd
    WHERE id = :turn_id AND finished_at IS NULL
    RETURNING id
), attempt_rows AS (
    INSERT INTO turn_attempts (turn_id, number, context_rung, started_at, finished_at, error_code)
    SELECT turn.id, a.number, a.context_rung, a.started_at, a.finished_at, a.error_code
    FROM turn, jsonb_to_recordset(:attempt_log) AS a(
        number int, context_rung int, started_at timestamptz, finished_at timestamptz,
        error_code text)
)
UPDATE chat_sessions SET
    input_tokens = input_tokens + :input_tokens,
    output_tokens = output_tokens + :output_tokens,
    cache_read_tokens = cache_read_tokens + :cache_read_tokens,
    cache_write_tokens = cache_write_tokens + :cache_write_tokens,
    cost_usd = cost_usd + :cost_usd,
    active_turn_id = CASE WHEN active_turn_id = :turn_id THEN NULL ELSE active_turn_id END
WHERE id = :session_id AND EXISTS (SELECT 1 FROM turn)
"""
).bindparams(
    bindparam("turn_id", type_=UUID(as_uuid=True)),
    bindparam("parts", type_=JSONB),
    bindparam("metadata", type_=JSONB),
    bindparam("attempt_log", type_=JSONB),
    bindparam("first_token_at", type_=DateTime(timezone=True)),
    bindparam("finished_at", type_=DateTime(timezone=True)),
    bindparam("ttft_ms", type_=Integer),
    bindparam("error_code", type_=String),
    bindparam("error_message", type_=String),
    bindparam("cost_usd", type_=Numeric(14, 6)),
)


@dataclass(slots=True)
class StartedTurn:
    """What the start statement gives back: the session title and the history before it."""

    title: str | None
    history: list[dict[str, Any]]


async def start_turn(
    engine: AsyncEngine,
    *,
    session_id: str,
    user_id: str,
    turn_id: uuid.UUID,
    user_message_id: str,
    user_parts: list[dict[str, Any]],
    user_metadata: dict[str, Any],
    assistant_message_id: str,
    backend: str,
    model: str,
    replica_id: str,
) -> StartedTurn | None:
    """Create the session if new, store the user message, the empty reply and the turn.

    None when the common case does not apply; then nothing was written.
    """
    params = {
        "session_id": session_id,
        "user_id": user_id,
        "turn_id": turn_id,
        "user_message_id": user_message_id,
        "user_parts": user_parts,
        "user_metadata": user_metadata,
        "assistant_message_id": assistant_message_id,
        "backend": backend,
        "model": model,
        "replica_id": replica_id,
    }
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = (await conn.execute(_START, params)).all()
    except IntegrityError:
        return None  # the message id is taken: a retried POST
    if not rows:
        return None
    history = [
        {
            "id": row.message_id,
            "role": row.role,
            "parts": row.parts,
            "metadata": {**(row.metadata or {}), "createdAt": row.created_at.isoformat()},
        }
        for row in rows
        if row.message_id is not None
    ]
    return StartedTurn(title=rows[0].title, history=history)


async def write_partials(engine: AsyncEngine, replies: list[dict[str, Any]]) -> None:
    """Store streaming replies as they stand (`{session_id, message_id, parts}` each)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(_PARTIALS, {"replies": replies})


@dataclass
class TurnEnd:
    """Everything the final statement stores."""

    session_id: str
    turn_id: uuid.UUID
    message_id: str
    parts: list[dict[str, Any]]
    message_status: str
    metadata: dict[str, Any]
    status: str
    finish_reason: str
    error_code: str | None
    error_message: str | None
    attempt_log: list[dict[str, Any]]
    first_token_at: datetime | None
    finished_at: datetime
    ttft_ms: int | None
    duration_ms: int
    usage: Usage
    cost: Decimal


async def finish_turn(engine: AsyncEngine, end: TurnEnd) -> None:
    """Store the reply, the turn and its attempts, and the session totals, atomically.

    Safe to repeat: a turn already finished is not counted twice.
    """
    params = {
        "session_id": end.session_id,
        "turn_id": end.turn_id,
        "message_id": end.message_id,
        "parts": end.parts,
        "message_status": end.message_status,
        "metadata": end.metadata,
        "status": end.status,
        "finish_reason": end.finish_reason,
        "error_code": end.error_code,
        "error_message": end.error_message,
        "attempts": len(end.attempt_log),
        "attempt_log": orjson.loads(orjson.dumps(end.attempt_log)),
        "first_token_at": end.first_token_at,
        "finished_at": end.finished_at,
        "ttft_ms": end.ttft_ms,
        "duration_ms": end.duration_ms,
        "input_tokens": end.usage.input_tokens,
        "output_tokens": end.usage.output_tokens,
        "cache_read_tokens": end.usage.cache_read_tokens,
        "cache_write_tokens": end.usage.cache_write_tokens,
        "cost_usd": end.cost,
    }
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(_FINISH, params)
