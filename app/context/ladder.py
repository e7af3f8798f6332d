"""The context ladder: what a turn does when its context does not fit the model's window.

- Rung 1, full: the stored history as loaded (from the newest compaction on), or the
  backend's own transcript (the CLI's, which the CLI compacts by itself).
- Rung 2, compacted: a summary of all but a recent tail (`Compactor`; a truncation note when
  the summary fails), stored so that later turns start from it.
- Rung 3, DB-only: the newest stored messages that fit, from the history as the turn loaded
  it (after a compacted context that was still too long, at most half its size); for the
  CLI, a fresh session seeded from them.
- Past rung 3, or when no rung can make the context smaller than the one that failed (the
  message to answer alone does not fit): `context_exhausted`.

The runner climbs when an attempt fails with `prompt_too_long` before anything was shown,
and before the first call when the history's estimate passes `COPILOT_COMPACT_AT` of the
window (proactive; only for backends whose full context is the stored history). A rung that
cannot make the context smaller (nothing before the tail to summarise) is passed over.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.backends.events import ContextChange, TurnRequest
from app.config import ContextSettings
from app.context.budget import UIMessage, history_tokens, message_tokens, newest_that_fit
from app.context.compactor import Compactor
from app.store.usage import Usage

FULL_RUNG, COMPACTED_RUNG, DB_ONLY_RUNG = 1, 2, 3
RESERVE_TOKENS = 1_000  # the system prompt and tool definitions, outside the history


@dataclass
class Climb:
    """What a climb did: the rung reached, the marker for the reply, the tokens it spent;
    `exhausted` when even the DB-only rung cannot fit the message to answer."""

    rung: int
    change: ContextChange | None = None
    usage: Usage | None = None
    model: str = ""
    exhausted: bool = False


class ContextLadder:
    """Builds the context of each rung into the turn's request."""

    def __init__(self, settings: ContextSettings, compactor: Compactor | None) -> None:
        self.settings = settings
        self.compactor = compactor

    def target(self, model: str) -> int:
        """Tokens the history may take before it is compacted (`COPILOT_COMPACT_AT` of the
        window, less what the system prompt and tools take)."""
        window = self.settings.window_for(model)
        return max(int(window * self.settings.compact_at) - RESERVE_TOKENS, 1)

    def over_target(self, request: TurnRequest) -> bool:
        """Whether the history is estimated past the target (compact before calling)."""
        return history_tokens(request.history) > self.target(request.model)

    async def climb(
        self, request: TurnRequest, rung: int, reason: str, loaded: list[UIMessage]
    ) -> Climb:
        """Put the context of `rung` (or the next rung that makes it smaller) into `request`.

        `loaded` is the history as the turn loaded it (the DB-only rung starts from it)."""
        target = self.target(request.model)
        if rung == COMPACTED_RUNG:
            compacted = None
            if self.compactor is not None:
                compacted = await self.compactor.compact(
                    request.session_id, request.turn_id, request.history, request.model, target
                )
            if compacted is not None:
                request.history = compacted.history
                request.context_rung = rung
                change = ContextChange(
                    compacted.method, reason, compacted.tokens_before, compacted.tokens_after
                )
                return Climb(rung, change, compacted.usage, compacted.model)
            rung = DB_ONLY_RUNG
        if rung > DB_ONLY_RUNG or not loaded:
            return Climb(rung, exhausted=True)
        before = history_tokens(request.history)
        if request.context_rung == COMPACTED_RUNG:
            # The compacted context was still too long: keep at most half of it.
            target = min(target, before // 2)
        kept = newest_that_fit(loaded, target)
        if len(kept) == 1 and message_tokens(kept[0]) > self.settings.window_for(request.model):
            return Climb(rung, exhausted=True)
        if history_tokens(kept) >= before:
            return Climb(rung, exhausted=True)  # no smaller than the context that failed
        request.history = kept
        request.context_rung = rung
        return Climb(rung, ContextChange("trim", reason, before, history_tokens(kept)))
