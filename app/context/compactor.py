"""Compaction of a stored history: a model's summary of everything but a recent tail.

The summary is its own Messages API call (`COPILOT_COMPACT_MODEL`, else the turn's model;
`COPILOT_COMPACT_TIMEOUT_S`), made on the same client as the turns and titles, whichever
backend runs the turn. The tail (the newest `COPILOT_COMPACT_KEEP_MESSAGES` messages, as many
of them as fit half the target) stays verbatim, with its reasoning and tool calls. When the
summary fails or times out, the head is dropped instead (deterministic truncation) and a
one-line note stands for it.

Either way the result is stored (`app.store.compactions`) before it is used, so later turns,
on any replica, start from it instead of compacting again; until it is stored, the previous
compaction counts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from anthropic import AsyncAnthropic
from anthropic.types import TextBlock

from app.backends.anthropic_messages import to_anthropic
from app.config import ContextSettings
from app.context.budget import UIMessage, history_tokens, message_tokens, newest_that_fit
from app.store.compactions import add_compaction, summary_message
from app.store.usage import Usage

log = logging.getLogger(__name__)

SUMMARY_SYSTEM = (
    "You compact conversations. Write a faithful summary of the conversation you are given: "
    "the user's goals, facts and decisions, what tools returned, open questions, and anything "
    "the assistant promised. It replaces those messages in the assistant's context, so keep "
    "every detail needed to continue; write it as notes, not as a reply to the user."
)
SUMMARY_REQUEST = "Summarise the conversation above, as instructed."


@dataclass
class Compacted:
    """A smaller context, stored: the summary (or truncation note) first, then the tail."""

    history: list[UIMessage]
    method: str  # "summary" | "truncation"
    tokens_before: int
    tokens_after: int
    usage: Usage | None = None  # the summary call's tokens, billed to the turn
    model: str = ""


def split_tail(history: list[UIMessage], keep: int, budget: int) -> int:
    """Where the verbatim tail starts: at most `keep` messages and `budget` tokens, the last
    message always in it, starting with a user message (0 when there is nothing before it)."""
    start = len(history) - 1
    used = message_tokens(history[start]) if history else 0
    while start > 0 and len(history) - start < keep:
        cost = message_tokens(history[start - 1])
        if used + cost > budget:
            break
        start -= 1
        used += cost
    while start > 0 and history[start].get("role") != "user":
        start += 1
        if start >= len(history):
            return len(history) - 1
    return start


def _stored_id(messages: list[UIMessage]) -> str | None:
    """The id of the newest stored message among `messages` (not a compaction summary)."""
    for message in reversed(messages):
        if not (message.get("metadata") or {}).get("compaction"):
            return str(message.get("id"))
    return None


class Compactor:
    """Makes a history smaller by a summary, and stores the result."""

    def __init__(
        self,
        settings: ContextSettings,
        client: AsyncAnthropic,
        pool: asyncpg.Pool,
    ) -> None:
        self.settings = settings
        self.client = client
        self.pool = pool

    async def compact(
        self, session_id: str, turn_id: str, history: list[UIMessage], model: str, target: int
    ) -> Compacted | None:
        """The history compacted to about `target` tokens, stored; None when there is nothing
        before the tail to compact."""
        start = split_tail(history, self.settings.compact_keep_messages, target // 2)
        head, tail = history[:start], history[start:]
        through = _stored_id(head)
        if not head or through is None:
            return None
        before = history_tokens(history)
        summary_model = self.settings.compact_model or model
        usage: Usage | None = None
        try:
            async with asyncio.timeout(self.settings.compact_timeout_s):
                summary, usage = await self._summarise(head, summary_model, target)
            method = "summary"
        except Exception as exc:
            log.warning("session %s: the summary failed (%s); truncating", session_id, exc)
            summary = f"({len(head)} earlier messages were left out to fit the context window.)"
            method = "truncation"
        after = history_tokens([summary_message(0, summary), *tail])
        compaction_id = await add_compaction(
            self.pool,
            session_id=session_id,
            turn_id=uuid.UUID(turn_id),
            through_message_id=through,
            summary=summary,
            method=method,
            tokens_before=before,
            tokens_after=after,
        )
        compacted = [summary_message(compaction_id, summary), *tail]
        return Compacted(compacted, method, before, after, usage, summary_model)

    async def _summarise(self, head: list[UIMessage], model: str, target: int) -> tuple[str, Usage]:
        """One Messages API call; the head is cut to what the summary call itself can take."""
        window = self.settings.window_for(model)
        room = int(window * self.settings.compact_at) - self.settings.compact_summary_tokens
        fitting = newest_that_fit([*head, _request()], max(room, 1))
        response = await self.client.messages.create(
            model=model,
            max_tokens=min(self.settings.compact_summary_tokens, max(target // 2, 64)),
            system=SUMMARY_SYSTEM,
            messages=to_anthropic(fitting),  # type: ignore[arg-type]
        )
        text = "".join(b.text for b in response.content if isinstance(b, TextBlock))
        if not text.strip():
            raise ValueError("the summary came back empty")
        u = response.usage
        usage = Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_tokens=u.cache_creation_input_tokens or 0,
        )
        return text.strip(), usage


def _request() -> dict[str, Any]:
    return {"id": "compaction-request", "role": "user",
            "parts": [{"type": "text", "text": SUMMARY_REQUEST}]}  # fmt: skip
