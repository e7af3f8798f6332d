"""Compactions of a session's stored history: a summary that stands for its older messages.

A turn's history starts after the newest compaction's last message, with the summary put in
front (`summary_message`): both history statements (`turn_rows._START`, `_HISTORY`) read it
that way, so a session compacted on one replica continues on any other from the compacted
state. Records are only added: the old one counts until the new
one is stored, in one statement.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

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
