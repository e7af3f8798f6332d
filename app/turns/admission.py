"""How many turn starts a replica takes on at once: a width that adapts to failures, in the
manner of TCP's congestion window (additive-ish increase, multiplicative decrease).

A start (ownership check, lease, first rows, its task's first step) is a few round trips, and
under a burst of new chats those round trips are shared: the ownership checks, the leases
and the start statements of the starts in flight go to Postgres and Redis together
(`app.coord.batching`), so more starts at once cost less each. What a burst must not do is
drown what does not scale with it: a pool that times out, a database refusing connections,
Redis unreachable, file descriptors running out. So the width starts at
`COPILOT_START_CONCURRENCY` (the ceiling) and a start that fails for the server's own reason
(anything but a refusal of the request itself, or a client that went away) halves it, at
most once per `BACKOFF_S` so that one outage's many failures count once, down to `FLOOR`;
each start that reaches its first step widens it again by a quarter (at least one).
Waiting starts are admitted in arrival order.

Latency is not the signal, though the first version used it (TCP Vegas: a start taking twice
the recent best narrowed the gate by one). Measured with `bench/relay.py`, the time a start
takes during a burst is the event loop's lag behind the streams already running, not
queueing among the starts: that rule narrowed the gate to 2-6 during every burst of 500 and
tripled its tail (TTFT p99 6.4 s against 1.7 s with the gate wide open).
"""

from __future__ import annotations

import asyncio
import collections
import time

from app.errors import AppError

FLOOR = 2
BACKOFF_S = 1.0  # failures within this long of a halving count as the same episode


def is_overload(exc: BaseException) -> bool:
    """Whether a failed start says the server is short of something (a pool, a connection,
    a dependency), rather than refusing the request or losing its client."""
    if isinstance(exc, (AppError, asyncio.CancelledError)):
        return False
    return isinstance(exc, Exception)


class AdaptiveGate:
    """A semaphore whose width halves on failures and grows back on successes (FIFO)."""

    def __init__(self, ceiling: int, floor: int = FLOOR) -> None:
        self.ceiling = max(ceiling, 1)
        self.floor = min(floor, self.ceiling)
        self.limit = self.ceiling
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._halved_at = -BACKOFF_S

    @property
    def waiting(self) -> int:
        """Starts waiting to be admitted."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait for a place (in arrival order)."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_place()  # admitted just as it was cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, outcome: bool | None = None) -> None:
        """Give a place back; `outcome`: True when the start reached its first step, False
        when it failed for the server's own reason (see `is_overload`), None otherwise."""
        if outcome is True:
            self.limit = min(self.ceiling, self.limit + max(1, self.limit // 4))
        elif outcome is False:
            now = time.monotonic()
            if now - self._halved_at >= BACKOFF_S:
                self._halved_at = now
                self.limit = max(self.floor, self.limit // 2)
        self._release_place()

    def _release_place(self) -> None:
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class Admission:
    """A place among the turns starting on this replica, given back once: when the turn's
    task starts, or when the start fails (with whether the failure was an overload)."""

    def __init__(self, gate: AdaptiveGate) -> None:
        self._gate = gate
        self._held = False

    async def take(self) -> None:
        """Wait for a place."""
        await self._gate.acquire()
        self._held = True

    def started(self) -> None:
        """The turn's task took its first step: the place goes back, a success."""
        if self._held:
            self._held = False
            self._gate.release(True)

    def give_back(self, failure: BaseException | None = None) -> None:
        """Free the place (again: nothing); `failure`: why the start failed, if it did."""
        if self._held:
            self._held = False
            self._gate.release(False if failure is not None and is_overload(failure) else None)
