"""Queries over chat sessions; every read is scoped to the owning user."""

from __future__ import annotations

import base64
import enum
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidInput, NotFound
from app.store.models import ChatSession

# The shape of a session id (`app/api/schemas.py`), checked again when a cursor is decoded.
_CURSOR_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _encode_cursor(row: ChatSession) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The `(created_at, id)` a cursor names; anything but a cursor this server issued is 422.

    Parsed defensively: a forged cursor can hold any bytes, a naive or out-of-range time (which
    the driver would only refuse when the query runs) or an id with characters no id has.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, session_id = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not _CURSOR_ID.fullmatch(session_id):
            raise ValueError("not an issued cursor")
        return created_at.astimezone(UTC), session_id
    except (ValueError, OverflowError) as exc:
        raise InvalidInput("cursor is not one this server issued", code="invalid_cursor") from exc


class _Keep(enum.Enum):
    KEEP = "keep"


# `SessionRepository.update`'s value for a field to leave as it is (None clears one).
KEEP = _Keep.KEEP


def session_not_found(session_id: str) -> NotFound:
    """The one answer for a session id the caller cannot see: unknown or someone else's."""
    return NotFound(f"session {session_id!r} not found", code="session_not_found")


class SessionRepository:
    """Reads and writes `chat_sessions`; only flushes, the caller commits."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def create(
        self,
        user_id: str,
        session_id: str | None,
        title: str | None,
        metadata: dict[str, Any],
        on_conflict: str | None = None,
    ) -> ChatSession:
        """Insert a session; a taken id is a conflict."""
        row = ChatSession(
            id=session_id or str(uuid.uuid4()), user_id=user_id, title=title, metadata_=metadata
        )
        stmt = (
            insert(ChatSession)
            .values(
                id=row.id, user_id=user_id, title=title, metadata=metadata, on_conflict=on_conflict
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(ChatSession.id)
        )
        if (await self.db.execute(stmt)).scalar_one_or_none() is None:
            raise Conflict(f"session id {row.id!r} is already taken", code="session_exists")
        return await self.get(user_id, row.id)

    async def get_or_create(self, user_id: str, session_id: str) -> ChatSession:
        """The caller's session with this id, created on first use; someone else's is 404."""
        stmt = (
            insert(ChatSession)
            .values(id=session_id, user_id=user_id)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        await self.db.execute(stmt)
        return await self.get(user_id, session_id)

    async def get(self, user_id: str, session_id: str, *, for_update: bool = False) -> ChatSession:
        """The caller's session or 404."""
        stmt = select(ChatSession).where(
            ChatSession.id == session_id, ChatSession.user_id == user_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.db.execute(stmt.execution_options(populate_existing=True))).scalar()
        if row is None:
            raise session_not_found(session_id)
        return row

    async def page(
        self, user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[ChatSession], str | None]:
        """The caller's sessions, newest first, and the cursor of the next page."""
        stmt = select(ChatSession).where(ChatSession.user_id == user_id)
        if cursor:
            created_at, session_id = _decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    ChatSession.created_at < created_at,
                    and_(ChatSession.created_at == created_at, ChatSession.id < session_id),
                )
            )
        stmt = stmt.order_by(ChatSession.created_at.desc(), ChatSession.id.desc()).limit(limit + 1)
        rows = list((await self.db.execute(stmt)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_cursor(rows[-1]) if more and rows else None)

    async def update(
        self,
        user_id: str,
        session_id: str,
        *,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_conflict: str | None | Literal[_Keep.KEEP] = KEEP,
    ) -> ChatSession:
        """Rename, replace metadata and/or set the session's policy (None clears it)."""
        row = await self.get(user_id, session_id, for_update=True)
        if title is not None:
            row.title = title
        if metadata is not None:
            row.metadata_ = metadata
        if on_conflict is not KEEP:
            row.on_conflict = on_conflict
        row.updated_at = func.now()
        await self.db.flush()
        return await self.get(user_id, session_id)

    async def delete(self, user_id: str, session_id: str) -> None:
        """Delete a session with its messages, turns and transcript (cascade)."""
        await self.get(user_id, session_id)
        await self.db.execute(delete(ChatSession).where(ChatSession.id == session_id))

    async def set_active_turn(self, session_id: str, turn_id: uuid.UUID | None) -> bool:
        """Point the session at its running turn (or clear it); False if another turn holds it."""
        stmt = update(ChatSession).where(ChatSession.id == session_id)
        if turn_id is not None:
            stmt = stmt.where(ChatSession.active_turn_id.is_(None))
        result = await self.db.execute(stmt.values(active_turn_id=turn_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]
