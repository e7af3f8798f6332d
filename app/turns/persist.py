"""How a turn's final state reaches Postgres (`TurnRows.finish`, one atomic statement).

A transient failure (connection lost, server restarting, deadlock...) is tried again: a few
quick tries, then patient ones with backoff for up to `FINAL_WRITE_DEADLINE_S`; meanwhile the
reply lives in memory and the turn keeps its session lease, so no other turn can start on a
history that lacks it. A statement the database refuses (a value it cannot store, a bug) would
fail the same way for ten minutes and hold the session all that time: it is not tried again.
The turn is stored instead as failed (`internal`) with every string cleaned (`clean`), and if
even that is refused, with the reply's parts dropped. Either way the session is freed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.store.turn_rows import TurnEnd, TurnRows, is_transient
from app.stream.text import clean

log = logging.getLogger(__name__)

FINAL_WRITE_DEADLINE_S = 600.0
QUICK_TRIES = (0.0, 0.5, 1.0)


@dataclass
class Attempt:
    """One attempt, remembered until the final write."""

    number: int
    context_rung: int
    started_at: datetime
    finished_at: datetime | None = None
    error_code: str | None = None
    reason: str | None = None  # why it ran at its rung: "retry", "prompt_too_long", ...
    tokens_before: int | None = None  # the context, before and after its rung shrank it
    tokens_after: int | None = None
    input_tokens: int | None = None  # billed for it (cache reads and writes included)
    output_tokens: int | None = None

    def as_row(self, finished_at: datetime) -> dict[str, Any]:
        """The attempt as stored in `turn_attempts`."""
        return {
            "number": self.number,
            "context_rung": self.context_rung,
            "started_at": self.started_at,
            "finished_at": self.finished_at or finished_at,
            "error_code": self.error_code,
            "reason": self.reason,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


class Refused(Exception):
    """The database refused the final statement for a reason trying again does not change."""


async def _try(rows: TurnRows, state: TurnEnd) -> int | None:
    """Messages waiting in the session's queue once written; None: try again."""
    try:
        return await rows.finish(state)
    except Exception as exc:
        if not is_transient(exc):
            raise Refused(f"{type(exc).__name__}: {exc}") from exc
        log.warning("turn %s: final write failed: %s", state.turn_id, exc)
        return None


async def _write(rows: TurnRows, state: TurnEnd, on_slow: Callable[[], None]) -> int | None:
    """A few quick tries, then (after `on_slow()`) patient ones; `Refused` ends them."""
    for delay in QUICK_TRIES:
        await asyncio.sleep(delay)
        if (waiting := await _try(rows, state)) is not None:
            return waiting
    on_slow()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_WRITE_DEADLINE_S
    delay = 2.0
    while loop.time() + delay < deadline:
        await asyncio.sleep(delay)
        if (waiting := await _try(rows, state)) is not None:
            log.info("turn %s: final write succeeded after Postgres came back", state.turn_id)
            return waiting
        delay = min(delay * 2, 30.0)
    log.error("turn %s: final write gave up; the reply stays as last flushed", state.turn_id)
    return None


def cleaned(state: TurnEnd, reason: str) -> TurnEnd:
    """The turn as failed (`internal`, `reason` noted), every string in it cleaned."""
    return dataclasses.replace(
        state,
        parts=clean(state.parts),
        message_status="error",
        metadata=clean(state.metadata),
        status="failed" if state.status == "completed" else state.status,
        error_code="internal",
        error_message=clean(f"the final write was refused: {reason}")[:2000],
    )


def stripped(state: TurnEnd) -> TurnEnd:
    """The turn without its reply's parts or metadata (what remains when those are refused)."""
    return dataclasses.replace(state, parts=[], metadata={})


async def persist_final(rows: TurnRows, state: TurnEnd, on_slow: Callable[[], None]) -> int | None:
    """Write the final state, retrying transient failures; a refused one is stored cleaned,
    then without its parts. How many messages wait in the session's queue once it is
    written; None when nothing could be stored."""
    try:
        return await _write(rows, state, on_slow)
    except Refused as exc:
        log.error("turn %s: final write refused (%s); storing it cleaned", state.turn_id, exc)
        state = cleaned(state, str(exc))
    try:
        return await _write(rows, state, on_slow)
    except Refused as exc:
        log.error("turn %s: cleaned final write refused (%s); dropping parts", state.turn_id, exc)
    try:
        return await _write(rows, stripped(state), on_slow)
    except Refused as exc:
        log.error("turn %s: final write refused for good: %s", state.turn_id, exc)
        return None
