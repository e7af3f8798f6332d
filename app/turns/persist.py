"""How a turn's final state reaches Postgres (`TurnRows.finish`, one atomic
statement): a few quick tries, then patient ones with backoff for up to
`FINAL_WRITE_DEADLINE_S`: while Postgres is away the reply lives in memory, and the turn keeps
its session lease so no other turn can start on a history that lacks it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.store.turn_rows import TurnEnd, TurnRows

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

    def as_row(self, finished_at: datetime) -> dict[str, Any]:
        """The attempt as stored in `turn_attempts`."""
        return {
            "number": self.number,
            "context_rung": self.context_rung,
            "started_at": self.started_at,
            "finished_at": self.finished_at or finished_at,
            "error_code": self.error_code,
        }


async def _try(rows: TurnRows, state: TurnEnd) -> bool:
    try:
        await rows.finish(state)
        return True
    except Exception as exc:
        log.warning("turn %s: final write failed: %s", state.turn_id, exc)
        return False


async def persist_final(rows: TurnRows, state: TurnEnd, on_slow: Callable[[], None]) -> bool:
    """Write the final state: a few quick tries, then (after `on_slow()`) patient ones."""
    for delay in QUICK_TRIES:
        await asyncio.sleep(delay)
        if await _try(rows, state):
            return True
    on_slow()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_WRITE_DEADLINE_S
    delay = 2.0
    while loop.time() + delay < deadline:
        await asyncio.sleep(delay)
        if await _try(rows, state):
            log.info("turn %s: final write succeeded after Postgres came back", state.turn_id)
            return True
        delay = min(delay * 2, 30.0)
    log.error("turn %s: final write gave up; the reply stays as last flushed", state.turn_id)
    return False
