"""One turn's encoded frames, kept in memory for the consumers on this replica.

The producer appends each frame once (already SSE-encoded); every consumer reads from its own
index, so a slow consumer simply gets a larger batch next time. Waking the consumers resolves
one shared event's waiters and re-arms it at once, without allocating anything per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from app.stream.sse import DONE, PING


class FrameBuffer:
    """Frames of one turn: appended by the producer, read from any index by consumers."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.done = False
        self._changed = asyncio.Event()
        self._pings = 0
        self._loop = asyncio.get_running_loop()
        self.last_frame_at = self._loop.time()

    def __len__(self) -> int:
        return len(self.frames)

    def append(self, encoded: bytes) -> None:
        """Add a frame and wake the consumers."""
        self.frames.append(encoded)
        self.last_frame_at = self._loop.time()
        self._notify()

    def end(self) -> bool:
        """No more frames: consumers finish with `[DONE]`; whether this call ended it."""
        if self.done:
            return False
        self.done = True
        self._notify()
        return True

    def ping_if_idle(self, now: float, heartbeat_s: float) -> None:
        """Wake the consumers for a `: ping` after `heartbeat_s` without a frame."""
        if not self.done and now - self.last_frame_at >= heartbeat_s:
            self._pings += 1
            self.last_frame_at = now
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed.clear()

    async def read_from(self, index: int) -> AsyncGenerator[bytes, None]:
        """Frames from `index` on, then live ones, `: ping` while idle, `[DONE]` at the end."""
        pings = self._pings
        while True:
            if index < len(self.frames):
                batch = self.frames[index:]
                index += len(batch)
                yield batch[0] if len(batch) == 1 else b"".join(batch)
            elif self.done:
                yield DONE
                return
            elif pings != self._pings:
                pings = self._pings
                yield PING
            else:
                await self._changed.wait()
