"""How many turn starts a replica takes on at once: a width that adapts to how long a start
takes, in the manner of TCP Vegas.

A start (ownership check, lease, first rows, its task's first step) is a few round trips.
Under a burst of hundreds of new chats on one event loop, admitting every start at once makes
each wait for nearly all the others before its model call; admitting too few leaves Postgres
and Redis idle between round trips. The right width depends on the machine, the database and
the load, so it is found rather than set: each start that reaches its first step reports how
long it took since it was admitted. The shortest start of the recent ones is what a start
costs without queueing; a start taking more than `SLOWER` times that means the admitted ones
are queueing behind each other (in the pools, the database, the event loop), and the width
shrinks by one; a start that took about the base time while others waited means there was
room, and the width grows by one. `COPILOT_START_CONCURRENCY` is the ceiling, `FLOOR` the
least. Waiting starts are admitted in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import time

FLOOR = 2
INITIAL = 8
SLOWER = 2.0  # a start this many times the recent best means the admitted ones queue
WINDOW = 64  # recent starts whose shortest is the base time


class AdaptiveGate:
    """A semaphore whose width adapts to start latency (FIFO)."""

    def __init__(self, ceiling: int, initial: int = INITIAL, floor: int = FLOOR) -> None:
        self.ceiling = max(ceiling, 1)
        self.floor = min(floor, self.ceiling)
        self.limit = max(self.floor, min(initial, self.ceiling))
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._recent: collections.deque[float] = collections.deque(maxlen=WINDOW)

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

    def release(self, took_s: float | None = None) -> None:
        """Give a place back; `took_s`: how long an admitted start took to reach its first
        step (None when it did not: refused, or waiting elsewhere), which tunes the width."""
        if took_s is not None:
            self._learn(took_s)
        self._release_place()

    def _release_place(self) -> None:
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _learn(self, took_s: float) -> None:
        self._recent.append(took_s)
        best = min(self._recent)
        if took_s > best * SLOWER and len(self._recent) >= 4:
            self.limit = max(self.floor, self.limit - 1)
        elif self._waiters and self.in_flight >= self.limit:
            self.limit = min(self.ceiling, self.limit + 1)


class Admission:
    """A place among the turns starting on this replica, given back once: when the turn's
    task starts (then its time tunes the gate), or when the start fails."""

    def __init__(self, gate: AdaptiveGate) -> None:
        self._gate = gate
        self._held_since: float | None = None

    async def take(self) -> None:
        """Wait for a place."""
        await self._gate.acquire()
        self._held_since = time.monotonic()

    def started(self) -> None:
        """The turn's task took its first step: the place goes back, its time reported."""
        if self._held_since is not None:
            took = time.monotonic() - self._held_since
            self._held_since = None
            self._gate.release(took)

    def give_back(self) -> None:
        """Free the place without a time (again: nothing)."""
        if self._held_since is not None:
            self._held_since = None
            self._gate.release()
