"""Compactions of a session's stored history: a summary that stands for its older messages.

A turn's history starts after the newest compaction's last message, with the summary put in
front (`summary_message`): the start statement (`turn_rows._START`) and the general path
(`context_history`) read the same way, so a session compacted on one replica continues on
any other from the compacted state. Records are only added: the old one counts until the new
one is stored, in one statement.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import ChatMessage, ContextCompaction

SUMMARY_INTRO = "[Summary of the earlier part of this conversation, whose messages were compacted]"

_ADD = """
INSERT INTO context_compactions (session_id, turn_id, through_message_id, summary, method,
                                 tokens_before, tokens_after)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id
"""


def summary_message(compaction_id: int, summary: str) -> dict[str, Any]:
    """The summary as the user message that opens a compacted history."""
    return {
        "id": f"compaction-{compaction_id}",
        "role": "user",
        "parts": [{"type": "text", "text": f"{SUMMARY_INTRO}\n\n{summary}"}],
        "metadata": {"compaction": compaction_id},
    }


async def add_compaction(
    pool: asyncpg.Pool,
    *,
    session_id: str,
    turn_id: uuid.UUID | None,
    through_message_id: str,
    summary: str,
    method: str,
    tokens_before: int | None,
    tokens_after: int | None,
) -> int:
    """Store a compaction; later turns start from it. Its id."""
    compaction_id: int = await pool.fetchval(
        _ADD, session_id, turn_id, through_message_id, summary, method, tokens_before, tokens_after
    )
    return compaction_id


async def context_history(db: AsyncSession, session_id: str) -> list[ChatMessage | dict[str, Any]]:
    """The session's history as a turn sends it: the newest compaction's summary, then the
    messages after it (all of them when there is none)."""
    latest = (
        await db.execute(
            select(ContextCompaction)
            .where(ContextCompaction.session_id == session_id)
            .order_by(ContextCompaction.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    after = 0
    if latest is not None:
        through = await db.scalar(
            select(ChatMessage.seq).where(
                ChatMessage.session_id == session_id,
                ChatMessage.message_id == latest.through_message_id,
            )
        )
        after = through or 0
    rows = (
        await db.execute(
            select(ChatMessage)
            .where(
                ChatMessage.session_id == session_id,
                ChatMessage.superseded_at.is_(None),
                ChatMessage.seq > after,
            )
            .order_by(ChatMessage.seq)
        )
    ).scalars()
    opening: list[ChatMessage | dict[str, Any]] = []
    if latest is not None:
        opening.append(summary_message(latest.id, latest.summary))
    return [*opening, *rows]
