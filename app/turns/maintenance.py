"""Replica-wide upkeep of running turns: heartbeats, partial replies, lease refreshes.

One task for the whole replica rather than three per turn: every tick it wakes idle turns'
consumers for a `: ping`, writes the changed partial replies of all turns in one statement,
and refreshes the due session leases in one pipeline. Database and Redis work then grows with
time and the number of running turns, never with tokens, and a turn costs no timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis, RedisCluster

from app.config import TurnSettings
from app.coord.lock import Lease, refresh_all
from app.coord.slots import UserSlot
from app.store.turn_rows import TurnRows
from app.turns.registry import TurnRegistry
from app.turns.runner import TurnRunner

log = logging.getLogger(__name__)

MAX_TICK_S = 0.25


class TurnMaintenance:
    """The upkeep task of one replica."""

    def __init__(
        self,
        registry: TurnRegistry,
        rows: TurnRows,
        redis: Redis | RedisCluster,
        settings: TurnSettings,
    ) -> None:
        self.registry = registry
        self.rows = rows
        self.redis = redis
        self.tick_s = min(MAX_TICK_S, settings.heartbeat_s / 2, settings.flush_interval_s / 2)
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking."""
        self._task = asyncio.create_task(self._loop(), name="turn-maintenance")

    async def close(self) -> None:
        """Stop ticking; let a write under way finish."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in (self._writing, self._refreshing):
            if job is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(job, 5)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            self.tick(loop.time())

    def tick(self, now: float) -> None:
        """One round of upkeep over every running turn."""
        replies: list[dict[str, Any]] = []
        leases: list[tuple[TurnRunner, Lease]] = []
        slots: list[UserSlot] = []
        for runner in self.registry.running():
            runner.ping_if_idle(now)
            parts = runner.partial_due(now)
            if parts is not None:
                replies.append(
                    {
                        "session_id": runner.session_id,
                        "message_id": runner.assistant_message_id,
                        "parts": parts,
                    }
                )
            lease = runner.lease_due(now)
            if lease is not None:
                leases.append((runner, lease))
                if runner.slot is not None:  # a user's slot lives as long as the lease
                    slots.append(runner.slot)
        # A slow database or Redis must not hold up heartbeats: the writes run on their own,
        # one of each kind at a time (a turn whose write is skipped is written next time).
        if replies and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write(replies))
        if leases and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh(leases, slots))

    async def _write(self, replies: list[dict[str, Any]]) -> None:
        try:
            await self.rows.write_partials(replies)
        except Exception as exc:  # the final write will store them anyway
            log.warning("partial replies not stored (%d turns): %s", len(replies), exc)

    async def _refresh(self, leases: list[tuple[TurnRunner, Lease]], slots: list[UserSlot]) -> None:
        try:
            held = await refresh_all(self.redis, [lease for _, lease in leases], slots)
        except Exception as exc:
            log.warning("session leases not refreshed (%d turns): %s", len(leases), exc)
            return
        for (runner, lease), ok in zip(leases, held, strict=True):
            if not ok:
                # Redis lost the lease (a restart without persistence, a failover) or it
                # expired: another turn may run now. This one stops producing.
                log.warning(
                    "turn %s lost the session lease %s: stopping", runner.turn_id, lease.key
                )
                runner.stop("lease_lost")
