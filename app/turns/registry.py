"""The turns running on this replica, by session."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.turns.runner import TurnRunner

log = logging.getLogger(__name__)


class TurnRegistry:
    """Finds the local runner of a session; stops and drains them at shutdown."""

    def __init__(self) -> None:
        self._by_session: dict[str, TurnRunner] = {}
        self._all: set[TurnRunner] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, runner: TurnRunner) -> None:
        """Track a started runner."""
        self._by_session[runner.session_id] = runner
        self._all.add(runner)
        self._idle.clear()

    def done(self, runner: TurnRunner) -> None:
        """Forget a runner whose final write is done."""
        self._all.discard(runner)
        if not self._all:
            self._idle.set()
        if self._by_session.get(runner.session_id) is runner:
            del self._by_session[runner.session_id]

    def for_session(self, session_id: str) -> TurnRunner | None:
        """The runner of the session's active turn, if it runs here."""
        return self._by_session.get(session_id)

    def running(self) -> list[TurnRunner]:
        """Every runner on this replica."""
        return list(self._all)

    def __len__(self) -> int:
        return len(self._all)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no turn runs here (True: all written) or `timeout_s` passed (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def interrupt_all(self) -> int:
        """Interrupt every running turn (the server is stopping); how many there were."""
        runners = [r for r in self._all if r.stop("shutdown")]
        if runners:
            log.info("interrupting %d running turn(s)", len(runners))
        return len(runners)

    async def shutdown(self, timeout_s: float) -> None:
        """Interrupt every running turn and wait for their final writes."""
        runners = list(self._all)
        if not runners:
            return
        self.interrupt_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(r.wait_persisted() for r in runners), return_exceptions=True)
