"""Session titles, written in the background once the session's first turn has shown
something (#15: a title never competes with a reply's first token).

A burst of new chats used to send a title request to the model at the same moment as each
chat's first turn: twice the upstream calls, and the server's work for them, exactly when
the burst landed, which set the tail of the time to first token. Now a title is asked for
only once its turn has produced its first visible output, or ended (`TurnRunner.shown`);
at most `CONCURRENCY` title requests run at once on a replica (the rest wait their turn,
after the replies); each has `DEADLINE_S` from its turn's first output, waiting included,
after which the title stays empty, as after any failure. The request takes the path the
turns take (`anthropic_http`: aiohttp directly, decoded with orjson, no SDK models), and the
title is stored with one statement on the turns' asyncpg pool only if the session has none
(the user may have named it meanwhile). With the Claude SDK backend too, the title comes
from the Messages API's title model, never from a CLI.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anthropic

from app.backends.anthropic_http import MessagesHttp
from app.store.turn_rows import TurnRows

log = logging.getLogger(__name__)

SYSTEM = (
    "You name conversations. Answer with a short title (at most six words, no quotes, no "
    "final period) for the conversation that starts with the user's message."
)
MAX_TITLE_CHARS = 80
CONCURRENCY = 32  # title requests at once per replica (each ~0.3 ms of CPU here)
DEADLINE_S = 30.0  # from the first visible output of its turn to the stored title
_SET_TITLE = "UPDATE chat_sessions SET title = $2 WHERE id = $1 AND title IS NULL"


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

    def __init__(self, client: anthropic.AsyncAnthropic, model: str, rows: TurnRows) -> None:
        self.http = MessagesHttp(client)
        self.model = model
        self.rows = rows
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(
        self, session_id: str, first_message: dict[str, Any], after: asyncio.Event | None = None
    ) -> None:
        """Write the session's title in the background, once `after` is set (the first turn
        showed something, or ended)."""
        task = asyncio.create_task(self._when(after, session_id, _text_of(first_message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _when(self, after: asyncio.Event | None, session_id: str, text: str) -> None:
        if after is not None:
            await after.wait()
        await self.write(session_id, text)

    async def write(self, session_id: str, text: str) -> None:
        """Generate and store the title unless the user named the session meanwhile. The
        deadline counts the wait for a place too: under more new chats than titles can be
        written for, the oldest are given up (left empty) rather than piling up."""
        try:
            async with asyncio.timeout(DEADLINE_S), self._gate:
                title = clean_title(await self._ask(text))
                if not title:
                    log.warning("session %s: the model gave an empty title", session_id)
                    return
                await self.rows.pool.execute(_SET_TITLE, session_id, title)
        except Exception as exc:
            log.warning("session %s: title generation failed: %r", session_id, exc)

    async def _ask(self, text: str) -> str:
        reply = await self.http.create(
            {
                "model": self.model,
                "max_tokens": 30,
                "system": SYSTEM,
                "messages": [{"role": "user", "content": text[:2000]}],
            }
        )
        return "".join(
            b.get("text", "") for b in reply.get("content", []) if b.get("type") == "text"
        )

    async def close(self) -> None:
        """Cancel pending title requests."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.close()
