"""The message queue of a session (`queued_messages`): messages sent while a turn runs.

A queued message is durable the moment its POST is answered: it is a row, in arrival order
(`id`), until its turn starts (`status` "started", moved into `chat_messages` by that turn's
start, `app.turns.start`), it joins a running turn ("steered"), or it is cancelled. Every
statement here is one round trip on the turns' asyncpg pool, except `add`, a short
transaction holding the session row so that the bound and the order hold under concurrent
POSTs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = "id, session_id, user_id, message_id, parts, metadata, kind, status, turn_id, created_at"

# How many are waiting ahead of a row (its position is that plus one).
_AHEAD = """(SELECT count(*) FROM queued_messages w
             WHERE w.session_id = q.session_id AND w.status = 'queued' AND w.id < q.id)"""


@dataclass(frozen=True, slots=True)
class Queued:
    """One queued message as it stands."""

    id: int
    session_id: str
    user_id: str
    message_id: str
    parts: list[dict[str, Any]]
    metadata: dict[str, Any]
    kind: str  # "turn" or "steer"
    status: str  # queued, started, steered, cancelled
    turn_id: uuid.UUID | None
    created_at: datetime
    position: int = 0  # 1: next; 0 once it is no longer waiting

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Queued:
        """A row of `_COLUMNS` (plus `ahead` when it was asked for)."""
        ahead = row.get("ahead")
        return cls(
            id=row["id"],
            session_id=row["session_id"],
            user_id=row["user_id"],
            message_id=row["message_id"],
            parts=row["parts"],
            metadata=row["metadata"] or {},
            kind=row["kind"],
            status=row["status"],
            turn_id=row["turn_id"],
            created_at=row["created_at"],
            position=int(ahead) + 1 if row["status"] == "queued" and ahead is not None else 0,
        )


class QueueFull(Exception):
    """The session already has its most queued messages."""


class SessionGone(Exception):
    """The session is another user's."""


class MessageIdTaken(Exception):
    """The message id is already a message of the session's history."""


class MessageQueue:
    """The statements of the queue."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add(
        self,
        *,
        session_id: str,
        user_id: str,
        message_id: str,
        parts: list[dict[str, Any]],
        metadata: dict[str, Any],
        kind: str,
        accepted_by: str,
        limit: int,
    ) -> Queued:
        """Queue a message at the end (or find it queued already: a retried POST); its
        position. `QueueFull` past `limit` waiting; `MessageIdTaken` when the id is in the
        history; `SessionGone` when the session is another user's."""
        async with self.pool.acquire() as conn, conn.transaction():
            # The session row serialises concurrent adds: the bound holds, ids are in order.
            # A session whose first turn is starting (its lease taken, its row not yet
            # written) is created here, as that turn's start would.
            await conn.execute(
                "INSERT INTO chat_sessions (id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                session_id,
                user_id,
            )
            owner = await conn.fetchval(
                "SELECT user_id FROM chat_sessions WHERE id = $1 FOR UPDATE", session_id
            )
            if owner != user_id:
                raise SessionGone(session_id)
            existing = await conn.fetchrow(
                f"SELECT {_COLUMNS}, {_AHEAD} AS ahead FROM queued_messages q"
                " WHERE session_id = $1 AND message_id = $2",
                session_id,
                message_id,
            )
            if existing is not None:
                return Queued.of(existing)
            if await conn.fetchval(
                "SELECT 1 FROM chat_messages WHERE session_id = $1 AND message_id = $2",
                session_id,
                message_id,
            ):
                raise MessageIdTaken(message_id)
            waiting = await conn.fetchval(
                "SELECT count(*) FROM queued_messages WHERE session_id = $1 AND status = 'queued'",
                session_id,
            )
            if waiting >= limit:
                raise QueueFull(waiting)
            row = await conn.fetchrow(
                "INSERT INTO queued_messages (session_id, user_id, message_id, parts, metadata,"
                " kind, status, accepted_by) VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7)"
                f" RETURNING {_COLUMNS}, $8::bigint AS ahead",
                session_id,
                user_id,
                message_id,
                parts,
                metadata,
                kind,
                accepted_by,
                waiting,
            )
            return Queued.of(row)

    async def get(self, queue_id: int) -> Queued | None:
        """The row as it stands now, with its position while it waits."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, {_AHEAD} AS ahead FROM queued_messages q WHERE id = $1",
            queue_id,
        )
        return Queued.of(row) if row is not None else None

    async def head(self, session_id: str) -> Queued | None:
        """The message that waited longest in the session, if any."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM queued_messages"
            " WHERE session_id = $1 AND status = 'queued' ORDER BY id LIMIT 1",
            session_id,
        )
        return Queued.of(row) if row is not None else None

    async def waiting(self, session_id: str) -> list[Queued]:
        """The session's waiting messages, in order, with their positions."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM queued_messages"
            " WHERE session_id = $1 AND status = 'queued' ORDER BY id",
            session_id,
        )
        return [Queued.of({**dict(row), "ahead": index}) for index, row in enumerate(rows)]

    async def length(self, session_id: str) -> int:
        """How many messages wait in the session."""
        return (await self.lengths([session_id])).get(session_id, 0)

    async def lengths(self, session_ids: list[str]) -> dict[str, int]:
        """How many messages wait in each of these sessions (one statement for a page of
        sessions); a session without any is left out."""
        if not session_ids:
            return {}
        rows = await self.pool.fetch(
            "SELECT session_id, count(*) AS waiting FROM queued_messages"
            " WHERE session_id = ANY($1::text[]) AND status = 'queued' GROUP BY session_id",
            session_ids,
        )
        return {row["session_id"]: row["waiting"] for row in rows}

    async def cancel(self, session_id: str, message_id: str) -> str | None:
        """Cancel a waiting message; its status after the call (cancelled, or started or
        steered when it was too late), None when the session queued no such message."""
        row = await self.pool.fetchrow(
            """
            WITH hit AS (
                UPDATE queued_messages SET status = 'cancelled', updated_at = now()
                WHERE session_id = $1 AND message_id = $2 AND status = 'queued'
                RETURNING status
            )
            SELECT status FROM hit
            UNION ALL
            SELECT status FROM queued_messages WHERE session_id = $1 AND message_id = $2
            LIMIT 1
            """,
            session_id,
            message_id,
        )
        return row["status"] if row is not None else None

    async def claim_steers(self, session_id: str, turn_id: uuid.UUID) -> list[Queued]:
        """The steering messages waiting in the session, now part of `turn_id`, in order."""
        rows = await self.pool.fetch(
            "UPDATE queued_messages SET status = 'steered', turn_id = $2, updated_at = now()"
            " WHERE session_id = $1 AND kind = 'steer' AND status = 'queued'"
            f" RETURNING {_COLUMNS}",
            session_id,
            turn_id,
        )
        return sorted((Queued.of(row) for row in rows), key=lambda q: q.id)

    async def sessions_waiting(self, replicas: list[str]) -> list[str]:
        """Sessions with waiting messages accepted by one of `replicas` (the fleet)."""
        if not replicas:
            return []
        rows = await self.pool.fetch(
            "SELECT DISTINCT session_id FROM queued_messages"
            " WHERE status = 'queued' AND accepted_by = ANY($1::text[])",
            replicas,
        )
        return [row["session_id"] for row in rows]


# Marks a queued message as started by a turn, inside that turn's start transaction: a
# message cancelled meanwhile (or started by another) is not started again.
MARK_STARTED = """
UPDATE queued_messages SET status = 'started', turn_id = :turn_id, updated_at = now()
WHERE id = :id AND status = 'queued'
"""
