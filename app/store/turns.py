"""Queries over turns and their attempts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Turn, TurnAttempt


class TurnRepository:
    """Reads and writes `turns` and `turn_attempts`; only flushes, the caller commits."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def create(self, **values: Any) -> Turn:
        """Insert a turn row."""
        row = Turn(**values)
        self.db.add(row)
        await self.db.flush()
        return row

    async def get(self, turn_id: uuid.UUID) -> Turn | None:
        """A turn by id."""
        return await self.db.get(Turn, turn_id)

    async def for_session(self, session_id: str, limit: int = 100) -> list[Turn]:
        """The session's turns, oldest first."""
        stmt = (
            select(Turn)
            .where(Turn.session_id == session_id)
            .order_by(Turn.started_at.desc())
            .limit(limit)
        )
        return list(reversed(list((await self.db.execute(stmt)).scalars())))

    async def attempts(self, turn_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[TurnAttempt]]:
        """Attempts of the given turns, grouped by turn."""
        grouped: dict[uuid.UUID, list[TurnAttempt]] = {turn_id: [] for turn_id in turn_ids}
        if not turn_ids:
            return grouped
        stmt = (
            select(TurnAttempt)
            .where(TurnAttempt.turn_id.in_(turn_ids))
            .order_by(TurnAttempt.turn_id, TurnAttempt.number)
        )
        for row in (await self.db.execute(stmt)).scalars():
            grouped[row.turn_id].append(row)
        return grouped
