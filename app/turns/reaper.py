"""The reaper: turns whose replica died are recorded as interrupted by a live replica.

Every replica looks, every `COPILOT_REAP_INTERVAL_S` (jittered, so replicas do not look in
step), for turns Postgres says are running on a replica of this fleet (one that announced
itself under this key prefix, `app.coord.replicas`) but whose session lease is gone: the
replica running them stopped renewing it (SIGKILL, OOM, node loss, or a pause longer than the
lease). Per look: one script reading the fleet, one indexed query (`turns.status =
'running'`) and one Redis pipeline of `EXISTS`, whatever the number of sessions; the turns
running here are skipped.

Reaping one turn (`Reaper.reap`), which the start of a new turn on an orphan's session uses too:

1. The reply is rebuilt from the turn's EventLog, which is at most a flush window behind what
   the client saw (the stored partial reply can be `COPILOT_FLUSH_INTERVAL_S` behind); without
   a log, the stored partial reply is kept.
2. One fenced statement (`TurnRows.reap`) stores it with a retryable `data-error`, marks the
   turn `interrupted` (with `reaped_by`) and frees the session. It applies only while the
   turn has not finished, so of two reapers, or a reaper and the late final write of a replica
   that was only slow, exactly one records the turn; that late write then adds only its usage.
3. The winner appends to the EventLog what closes the stream (open parts and step ended,
   `data-error`, `error`, `finish`) and ends it, so a client tailing the turn on any replica
   ends cleanly instead of waiting. It is a closing entry (`eventlog.close_log`): a client
   that got frames the dead replica never flushed to the log (its last flush window) already
   holds the numbers these frames would have, and is given them renumbered after its own.

A slow replica that comes back finds its lease gone at its next refresh and stops the turn
(`TurnMaintenance`); its final write no longer changes the reply or the turn's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis, RedisCluster

from app.backends.errors import MESSAGES
from app.coord.redis import REDIS_ERRORS, Keys
from app.coord.replicas import ReplicaDirectory
from app.observability import metrics
from app.store.queue import MessageQueue
from app.store.turn_rows import TurnRows
from app.stream import chunks
from app.stream.eventlog import EventLogWriter, close_log, log_frames
from app.stream.replay import closing_chunks, frame_chunks
from app.stream.sse import frame
from app.turns.registry import TurnRegistry
from app.turns.reply import ReplyAssembler

log = logging.getLogger(__name__)

REAP_CONCURRENCY = 8  # orphans reaped at once (a dead replica may leave hundreds)
JITTER = 0.2  # each period is the interval times 1 ± this


class Reaper:
    """Finds and records the orphaned turns of dead replicas; announces this replica."""

    def __init__(
        self,
        rows: TurnRows,
        redis: Redis | RedisCluster,
        keys: Keys,
        registry: TurnRegistry,
        eventlog: EventLogWriter,
        replica_id: str,
        interval_s: float,
        report: Callable[[], dict[str, Any]] | None = None,
        queue: MessageQueue | None = None,
    ) -> None:
        self.rows = rows
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.eventlog = eventlog
        self.replica_id = replica_id
        self.interval_s = interval_s
        self.directory = ReplicaDirectory(redis, keys.prefix)
        self.report = report or (lambda: {})
        self.queue = queue
        # Called with a session that nobody holds while messages may wait in its queue (its
        # turn was just reaped, or the replica that should have started the next one died).
        self.on_free: Callable[[str], None] | None = None
        self.started_at = datetime.now(UTC).isoformat()
        self._task: asyncio.Task[None] | None = None

    @property
    def stale_s(self) -> float:
        """How long after its last announcement a replica is no longer listed as live."""
        return 3 * self.interval_s * (1 + JITTER)

    @property
    def closes_within_s(self) -> float:
        """How long after a dead replica's lease is gone its turns' logs are closed, at most,
        by some replica's reaper (0: no reaper runs)."""
        return self.interval_s * (1 + JITTER) + 1 if self.interval_s > 0 else 0.0

    async def start(self) -> None:
        """Announce this replica (before it runs a turn, so that its turns are known to every
        reaper), then look for orphans and announce it again every period. Nothing when the
        interval is 0: then an orphan is recorded when its session's next message arrives."""
        if self.interval_s <= 0:
            return
        try:
            await asyncio.wait_for(self.announce(), 5)
        except Exception as exc:  # Redis down: the first period announces it
            log.warning("reaper: could not announce this replica: %s", exc)
        self._task = asyncio.create_task(self._loop(), name="reaper")

    async def close(self) -> None:
        """Stop looking; leave the live listing (still known, should a turn be left over)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.announce(age_s=self.stale_s), 2)

    async def _loop(self) -> None:
        # The first look comes soon after the start: a replica restarted after a crash finds
        # its own orphans at once (their leases have expired by the time it is up, or soon).
        delay = min(1.0, self.interval_s)
        while True:
            await asyncio.sleep(delay)
            delay = self.interval_s * random.uniform(1 - JITTER, 1 + JITTER)
            try:
                await self.announce()
                await self.sweep()
            except Exception as exc:  # Postgres or Redis down: the next period tries again
                log.warning("reaper: %s: %s", type(exc).__name__, exc)

    async def announce(self, age_s: float = 0) -> None:
        """Tell the replica listing this replica is alive (or, `age_s` old, that it was), and
        what it runs."""
        report = {
            "id": self.replica_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "running_turns": len(self.registry),
            **self.report(),
        }
        await self.directory.announce(self.replica_id, report, age_s)

    async def sweep(self) -> int:
        """Reap every turn recorded as running whose lease is gone; how many this replica
        recorded."""
        began = time.perf_counter()
        fleet = list(await self.directory.known())
        running = await self.rows.running_turns(fleet)
        candidates = [(s, t) for s, t in running if not self._runs_here(s, t)]
        queues: list[str] = []
        if self.queue is not None and self.on_free is not None:
            queues = [
                s
                for s in await self.queue.sessions_waiting(fleet)
                if self.registry.for_session(s) is None
            ]
        reaped = 0
        if candidates or queues:
            pipe = self.redis.pipeline(transaction=False)
            for session_id in [s for s, _ in candidates] + queues:
                pipe.exists(self.keys.session_lease(session_id))
            held = await pipe.execute()
            orphans = [c for c, lease in zip(candidates, held, strict=False) if not lease]
            if orphans:
                reaped = await self._reap_all(orphans)
            stuck = [
                s for s, lease in zip(queues, held[len(candidates) :], strict=True) if not lease
            ]
            for session_id in dict.fromkeys([s for s, _ in orphans] + stuck):
                if self.on_free is not None:
                    self.on_free(session_id)
        metrics.REAPER_SWEEPS.observe(time.perf_counter() - began)
        return reaped

    def _runs_here(self, session_id: str, turn_id: uuid.UUID) -> bool:
        runner = self.registry.for_session(session_id)
        return runner is not None and runner.turn_id == str(turn_id)

    async def _reap_all(self, orphans: list[tuple[str, uuid.UUID]]) -> int:
        gate = asyncio.Semaphore(REAP_CONCURRENCY)

        async def one(session_id: str, turn_id: uuid.UUID) -> bool:
            async with gate:
                try:
                    return await self.reap(session_id, turn_id)
                except Exception as exc:  # this one is tried again next period
                    log.warning("reaper: turn %s not reaped: %s", turn_id, exc)
                    return False

        done = await asyncio.gather(*(one(s, t) for s, t in orphans))
        return sum(done)

    async def reap(self, session_id: str, turn_id: uuid.UUID) -> bool:
        """Record one orphaned turn as interrupted and close its EventLog; whether this call
        did it (False: the turn had ended, or another replica reaped it first)."""
        key = self.keys.turn_events(session_id, str(turn_id))
        try:
            frames = await log_frames(self.redis, key)
        except REDIS_ERRORS:
            frames = []  # the stored partial reply will do
        sent = frame_chunks(frames)
        ended = any(chunk.get("type") == "finish" for _, chunk in sent)
        last_seq, closing = closing_chunks(frames)
        error, said = chunks.failure("interrupted", MESSAGES["interrupted"], True)
        tail = [] if ended else [*closing, error]
        parts = None
        if sent:
            reply = ReplyAssembler()
            for _, chunk in sent:
                if not chunk.get("transient"):
                    reply.apply(chunk)
            for chunk in closing:
                reply.apply(chunk)
            parts = reply.parts()
        reaped = await self.rows.reap(
            session_id,
            turn_id,
            parts=parts,
            closing=[] if ended else [error],
            detail="the replica running this turn stopped renewing its session lease",
            reaped_by=self.replica_id,
        )
        if reaped is None:
            return False
        metrics.TURNS_REAPED.inc()
        log.warning("reaped turn %s of session %s: its replica is gone", turn_id, session_id)
        if sent and not ended:
            tail += [said, chunks.finish("error", reaped.metadata)]
            frames = [frame(seq, chunk) for seq, chunk in enumerate(tail, start=last_seq + 1)]
            await close_log(self.redis, key, frames, self.eventlog.ttl_s)
        return True
