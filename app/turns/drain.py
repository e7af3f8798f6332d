"""The drain before a replica stops: not ready, no new turns, running turns may finish.

On SIGTERM (a deploy, a scale-down) `copilot serve` keeps listening for up to
`COPILOT_DRAIN_S`: `/readyz` answers 503 so the load balancer takes the replica out,
`POST /chat` answers 503 `draining` with `Retry-After` so the client (or a retrying proxy)
goes to another replica, and everything else (resume, stop, sessions) is served as usual.
The drain ends as soon as no turn runs here, or when its time is up; then the stop begins:
what still runs is interrupted (retryable `interrupted`, everything stored), as it always was.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from app.errors import Draining

if TYPE_CHECKING:
    from app.turns.registry import TurnRegistry

log = logging.getLogger(__name__)

# What a refused chat is told to wait. Another replica can take it at once; the seconds
# only keep a client that lands here again (one replica, a proxy that has not yet seen
# `/readyz` fail) from retrying in a tight loop.
RETRY_AFTER_S = 2


class Drain:
    """Whether this replica is draining; refuses new turns while it is."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    @property
    def active(self) -> bool:
        """The drain (or the stop after it) has begun."""
        return self.started_at is not None

    def begin(self) -> None:
        """Report not ready and refuse new turns from now on (safe in a signal handler)."""
        if self.started_at is None:
            self.started_at = time.monotonic()

    def refuse_new_turn(self) -> None:
        """Raise `Draining` (503, `Retry-After`) once the drain has begun."""
        if self.active:
            raise Draining(
                "this server is shutting down and takes no new chats; send the message again "
                f"(in {RETRY_AFTER_S} s) and another server will answer it. Running replies "
                "can still be resumed or stopped here",
                retry_after_s=RETRY_AFTER_S,
            )

    async def wait_for_turns(self, registry: TurnRegistry, drain_s: float) -> int:
        """Let the running turns finish for up to `drain_s`; how many still run after it."""
        self.begin()
        running = len(registry)
        log.info(
            "draining: not ready, new chats refused; waiting up to %.0f s for %d running turn(s)",
            drain_s,
            running,
        )
        if await registry.wait_idle(drain_s):
            log.info("drain done: no turn runs here")
            return 0
        left = len(registry)
        log.info("drain time is up: %d turn(s) still running", left)
        return left
