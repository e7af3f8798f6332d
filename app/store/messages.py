"""Queries over chat messages: append with a per-session sequence, read history, flush a reply."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidInput
from app.store.models import ChatMessage, ChatSession


def as_ui_message(row: ChatMessage) -> dict[str, Any]:
    """A stored row as an AI SDK `UIMessage`."""
    metadata = dict(row.metadata_ or {})
    metadata.setdefault("createdAt", row.created_at.isoformat())
    return {"id": row.message_id, "role": row.role, "parts": row.parts, "metadata": metadata}


class MessageRepository:
    """Reads and writes `chat_messages`; only flushes, the caller commits."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def append(
        self,
        session_id: str,
        *,
        message_id: str,
        role: str,
        parts: list[Any],
        metadata: dict[str, Any] | None = None,
        status: str = "complete",
        turn_id: uuid.UUID | None = None,
    ) -> ChatMessage:
        """Append a message under the next sequence number of its session."""
        seq = (
            await self.db.execute(
                update(ChatSession)
                .where(ChatSession.id == session_id)
                .values(last_seq=ChatSession.last_seq + 1)
                .returning(ChatSession.last_seq)
            )
        ).scalar_one()
        row = ChatMessage(
            session_id=session_id,
            seq=seq,
            message_id=message_id,
            role=role,
            parts=parts,
            metadata_=metadata or {},
            status=status,
            turn_id=turn_id,
        )
        self.db.add(row)
        await self.db.flush()
        return row

    async def by_message_id(self, session_id: str, message_id: str) -> ChatMessage | None:
        """The message with this client id in the session, if any."""
        stmt = select(ChatMessage).where(
            ChatMessage.session_id == session_id, ChatMessage.message_id == message_id
        )
        return (await self.db.execute(stmt)).scalar()

    async def history(self, session_id: str) -> list[ChatMessage]:
        """The visible conversation, oldest first (superseded replies left out)."""
        stmt = (
            select(ChatMessage)
            .where(ChatMessage.session_id == session_id, ChatMessage.superseded_at.is_(None))
            .order_by(ChatMessage.seq)
        )
        return list((await self.db.execute(stmt)).scalars())

    async def page(
        self, session_id: str, limit: int, before: str | None
    ) -> tuple[list[ChatMessage], bool]:
        """Up to `limit` visible messages before the one with id `before`, oldest first."""
        stmt = select(ChatMessage).where(
            ChatMessage.session_id == session_id, ChatMessage.superseded_at.is_(None)
        )
        if before is not None:
            anchor = await self.by_message_id(session_id, before)
            if anchor is None:
                raise InvalidInput(f"no message {before!r} in this session", code="invalid_before")
            stmt = stmt.where(ChatMessage.seq < anchor.seq)
        rows = list(
            (
                await self.db.execute(stmt.order_by(ChatMessage.seq.desc()).limit(limit + 1))
            ).scalars()
        )
        more = len(rows) > limit
        return list(reversed(rows[:limit])), more

    async def last_visible(self, session_id: str) -> ChatMessage | None:
        """The newest visible message of the session."""
        stmt = (
            select(ChatMessage)
            .where(ChatMessage.session_id == session_id, ChatMessage.superseded_at.is_(None))
            .order_by(ChatMessage.seq.desc())
            .limit(1)
        )
        return (await self.db.execute(stmt)).scalar()

    async def supersede(self, row: ChatMessage) -> None:
        """Hide a message from the history (a regenerated reply); the row stays."""
        row.superseded_at = func.now()
        await self.db.flush()
