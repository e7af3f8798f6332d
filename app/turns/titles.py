"""Session titles, written in the background after the first user message."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anthropic
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.store.sessions import SessionRepository

log = logging.getLogger(__name__)

SYSTEM = (
    "You name conversations. Answer with a short title (at most six words, no quotes, no "
    "final period) for the conversation that starts with the user's message."
)
MAX_TITLE_CHARS = 80


def _text_of(message: dict[str, Any]) -> str:
    return " ".join(
        str(p.get("text", "")) for p in message.get("parts", []) if p.get("type") == "text"
    ).strip()


def clean_title(raw: str) -> str:
    """One line, without quotes or a trailing period, at most 80 characters."""
    line = raw.strip().splitlines()[0] if raw.strip() else ""
    line = line.strip().strip("\"'`").rstrip(".").strip()
    return line[:MAX_TITLE_CHARS]


class TitleWriter:
    """Asks a small model for a title; a failure leaves the title empty and is logged."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        model: str,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.client = client
        self.model = model
        self.sessions = sessions
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, session_id: str, first_message: dict[str, Any]) -> None:
        """Write the session's title in the background."""
        task = asyncio.create_task(self.write(session_id, _text_of(first_message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def write(self, session_id: str, text: str) -> None:
        """Generate and store the title unless the user named the session meanwhile."""
        try:
            reply = await self.client.messages.create(
                model=self.model,
                max_tokens=30,
                system=SYSTEM,
                messages=[{"role": "user", "content": text[:2000]}],
            )
            raw = "".join(b.text for b in reply.content if b.type == "text")
            title = clean_title(raw)
            if not title:
                log.warning("session %s: the model gave an empty title", session_id)
                return
            async with self.sessions() as db:
                await SessionRepository(db).set_title_if_empty(session_id, title)
                await db.commit()
        except Exception as exc:
            log.warning("session %s: title generation failed: %s", session_id, exc)

    async def close(self) -> None:
        """Cancel pending title requests."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
