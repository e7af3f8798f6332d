"""Warm CLI processes, one per session, kept on this replica between turns.

A kept-open `ClaudeSDKClient` answers a session's next turn with its first token in ~25-35 ms,
against ~300-350 ms and ~0.4 s of CPU for a fresh spawn. Each costs memory (~120 MB PSS idle,
~190 MB busy), so the pool closes a client idle for `idle_s`, and keeps at most `max_live`
open, closing the least recently used idle one first. A turn never waits for room: when every
client is busy the pool runs over its cap for a moment and closes the surplus as turns end.

A client is handed out only while nothing else uses it (`take` removes it from the pool), and
only if it saw the whole stored transcript: the caller compares `LiveClient.position` (what the
client's store wrote or read) with the transcript's position in Postgres, since another replica
may have answered the session in between (`is_current`).

Closing a client (`disconnect`) ends its CLI process; it runs in a task of its own, shielded,
so a cancelled turn still reaps its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from claude_agent_sdk import ClaudeSDKClient

from app.backends.claude_sdk.hooks import SteeringHook
from app.backends.claude_sdk.ports import BoundTranscript
from app.backends.claude_sdk.spawning import BootSlot, cli_pid
from app.store.transcripts import TranscriptPosition

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LiveClient:
    """A connected client of one session, with the transcript store it mirrors into."""

    session_id: str
    client: ClaudeSDKClient
    store: BoundTranscript
    model: str = ""
    last_used: float = field(default_factory=time.monotonic)
    reader: asyncio.Task[None] | None = None  # the pump reading the current turn

    @property
    def position(self) -> TranscriptPosition:
        """What this client's CLI has seen of the stored transcript."""
        return self.store.position

    boot: BootSlot | None = None  # held from the spawn to the first turn's first message
    steering: SteeringHook | None = None  # its PostToolUse hook, pointed at the running turn

    @property
    def pid(self) -> int | None:
        """The CLI's process id (None once it is gone)."""
        return cli_pid(self.client)

    def booted(self) -> None:
        """The CLI answered (or its first turn ended): let the next boot start."""
        if self.boot is not None:
            self.boot.release()
            self.boot = None

    def is_current(self, stored: TranscriptPosition | None) -> bool:
        """Whether the stored transcript is exactly what this client last saw."""
        seen = self.position
        if stored is None:
            return seen.last_seq == 0
        return (stored.generation, stored.last_seq) == (seen.generation, seen.last_seq)


class ClientPool:
    """Idle warm clients by session (least recently used first), and the busy ones."""

    def __init__(self, max_live: int, idle_s: float) -> None:
        self.max_live = max_live
        self.idle_s = idle_s
        self.idle: OrderedDict[str, LiveClient] = OrderedDict()
        self.busy: set[LiveClient] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    @property
    def live(self) -> int:
        """Clients open now (idle and busy)."""
        return len(self.idle) + len(self.busy)

    def census(self) -> dict[str, int]:
        """CLI processes open or closing, and the idle (warm) clients among them: the
        `copilot_sdk_*` gauges, read when `/metrics` is scraped."""
        return {
            "cli_processes": self.live + len(self._closing),
            "warm_clients": len(self.idle),
        }

    def take(self, session_id: str) -> LiveClient | None:
        """The session's idle client, now busy (None when it has none)."""
        live = self.idle.pop(session_id, None)
        if live is not None:
            self.busy.add(live)
        return live

    def adopt(self, live: LiveClient) -> None:
        """Count a newly connected client as busy, making room first if the pool is full."""
        self.busy.add(live)
        self._trim()

    def put_back(self, live: LiveClient) -> None:
        """A turn ended cleanly: the client waits for the session's next turn."""
        self.busy.discard(live)
        live.last_used = time.monotonic()
        old = self.idle.pop(live.session_id, None)
        if old is not None and old is not live:
            self._close(old)
        self.idle[live.session_id] = live
        self._trim()
        self._ensure_reaper()

    def discard(self, live: LiveClient) -> None:
        """Close a client that must not be used again (dead, stale, mid-turn when abandoned)."""
        self.busy.discard(live)
        if self.idle.get(live.session_id) is live:
            del self.idle[live.session_id]
        self._close(live)

    async def forget(self, session_id: str) -> None:
        """Close the session's clients and wait until their processes are gone."""
        live = self.idle.pop(session_id, None)
        if live is not None:
            self._close(live)
        for busy in [c for c in self.busy if c.session_id == session_id]:
            self.discard(busy)
        await self.drain()

    async def close(self) -> None:
        """Close every client and wait for every process to end."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for live in [*self.idle.values(), *self.busy]:
            self.discard(live)
        await self.drain()

    async def drain(self) -> None:
        """Wait for the closes under way."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    def _trim(self) -> None:
        while self.live > self.max_live and self.idle:
            _, oldest = self.idle.popitem(last=False)
            log.info("closing the warm CLI of session %s (pool full)", oldest.session_id)
            self._close(oldest)

    def _close(self, live: LiveClient) -> None:
        async def disconnect() -> None:
            try:
                await live.client.disconnect()
            except Exception:  # a dead process or a broken pipe: it is gone either way
                log.debug("disconnect of session %s failed", live.session_id, exc_info=True)

        task = asyncio.ensure_future(disconnect())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            # Replica-wide, though a turn starts it: its log lines name no turn or session.
            self._reaper = asyncio.create_task(
                self._reap(), name="sdk-idle-reaper", context=contextvars.Context()
            )

    async def _reap(self) -> None:
        """Close clients idle for `idle_s`; ends when none is left idle."""
        while self.idle:
            oldest = next(iter(self.idle.values()))
            wait = oldest.last_used + self.idle_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, self.idle_s))
                continue
            self.idle.pop(oldest.session_id, None)
            log.info("closing the warm CLI of session %s (idle)", oldest.session_id)
            self._close(oldest)
