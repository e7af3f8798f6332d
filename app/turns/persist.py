"""What a turn writes to Postgres: its partial reply while streaming, and its final state.

The final state is one transaction: the reply, the turn row with its attempts, the session's
usage totals, and the session's `active_turn_id` cleared. It is retried with backoff for up to
`FINAL_WRITE_DEADLINE_S`: while Postgres is away the reply lives in memory, and the turn keeps
its session lease so no other turn can start on a history that lacks it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.store.messages import MessageRepository
from app.store.sessions import SessionRepository
from app.store.turns import TurnRepository
from app.store.usage import Usage

log = logging.getLogger(__name__)

FINAL_WRITE_DEADLINE_S = 600.0
QUICK_TRIES = (0.0, 0.5, 1.0)


@dataclass
class Attempt:
    """One attempt, remembered until the final write."""

    number: int
    context_rung: int
    started_at: datetime
    finished_at: datetime | None = None
    error_code: str | None = None


@dataclass
class FinalState:
    """Everything the final write stores, captured when the turn ends."""

    session_id: str
    turn_id: uuid.UUID
    message_id: str
    parts: list[dict[str, Any]]
    message_status: str
    metadata: dict[str, Any]
    turn_values: dict[str, Any]
    attempts: list[Attempt]
    usage: Usage
    cost: Decimal
    finished_at: datetime


async def write_partial(
    sessions: async_sessionmaker[AsyncSession],
    session_id: str,
    message_id: str,
    parts: list[dict[str, Any]],
) -> None:
    """Store the reply as it stands, still streaming."""
    async with sessions() as db:
        await MessageRepository(db).write_reply(
            session_id, message_id, parts=parts, status="streaming"
        )
        await db.commit()


async def write_final(sessions: async_sessionmaker[AsyncSession], state: FinalState) -> None:
    """Store the final state in one transaction."""
    async with sessions() as db:
        await MessageRepository(db).write_reply(
            state.session_id,
            state.message_id,
            parts=state.parts,
            status=state.message_status,
            metadata=state.metadata,
        )
        turns = TurnRepository(db)
        await turns.update(state.turn_id, **state.turn_values)
        for attempt in state.attempts:
            await turns.record_attempt(
                state.turn_id,
                attempt.number,
                attempt.context_rung,
                attempt.started_at,
                attempt.finished_at or state.finished_at,
                attempt.error_code,
            )
        repo = SessionRepository(db)
        await repo.add_usage(state.session_id, state.usage, state.cost)
        await repo.set_active_turn(state.session_id, None, expected=state.turn_id)
        await db.commit()


async def _try(sessions: async_sessionmaker[AsyncSession], state: FinalState) -> bool:
    try:
        await write_final(sessions, state)
        return True
    except Exception as exc:
        log.warning("turn %s: final write failed: %s", state.turn_id, exc)
        return False


async def persist_final(
    sessions: async_sessionmaker[AsyncSession],
    state: FinalState,
    on_slow: Any,
) -> bool:
    """Write the final state: a few quick tries, then (after `on_slow()`) patient ones."""
    for delay in QUICK_TRIES:
        await asyncio.sleep(delay)
        if await _try(sessions, state):
            return True
    on_slow()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_WRITE_DEADLINE_S
    delay = 2.0
    while loop.time() + delay < deadline:
        await asyncio.sleep(delay)
        if await _try(sessions, state):
            log.info("turn %s: final write succeeded after Postgres came back", state.turn_id)
            return True
        delay = min(delay * 2, 30.0)
    log.error("turn %s: final write gave up; the reply stays as last flushed", state.turn_id)
    return False
