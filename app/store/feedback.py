"""Users' ratings of assistant replies: one row per message, replaced when it changes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import MessageFeedback


def feedback_out(row: MessageFeedback) -> dict[str, Any]:
    """A rating as the message's metadata shows it (`comment` only when there is one)."""
    shown: dict[str, Any] = {"rating": row.rating}
    if row.comment is not None:
        shown["comment"] = row.comment
    return shown


class FeedbackRepository:
    """Reads and writes `message_feedback`; only flushes, the caller commits."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def put(
        self, session_id: str, message_id: str, user_id: str, rating: str, comment: str | None
    ) -> MessageFeedback:
        """Store the rating of a message, replacing the one it had."""
        values = {"rating": rating, "comment": comment, "user_id": user_id}
        stmt = (
            insert(MessageFeedback)
            .values(session_id=session_id, message_id=message_id, **values)
            .on_conflict_do_update(
                constraint="uq_message_feedback_session_message",
                set_={**values, "updated_at": func.now()},
            )
            .returning(MessageFeedback)
            .execution_options(populate_existing=True)
        )
        return (await self.db.execute(stmt)).scalar_one()

    async def remove(self, session_id: str, message_id: str) -> bool:
        """Delete the rating of a message; whether it had one."""
        stmt = (
            delete(MessageFeedback)
            .where(
                MessageFeedback.session_id == session_id,
                MessageFeedback.message_id == message_id,
            )
            .returning(MessageFeedback.id)
        )
        return (await self.db.execute(stmt)).scalar() is not None

    async def for_messages(
        self, session_id: str, message_ids: list[str]
    ) -> dict[str, MessageFeedback]:
        """The ratings of these messages of the session, by message id."""
        if not message_ids:
            return {}
        stmt = select(MessageFeedback).where(
            MessageFeedback.session_id == session_id,
            MessageFeedback.message_id.in_(message_ids),
        )
        return {row.message_id: row for row in (await self.db.execute(stmt)).scalars()}
