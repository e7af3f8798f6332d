"""Starting CLI processes without making every new session wait for all of them.

A CLI's boot is CPU-bound: ~0.3 s of one core until `connect()` returns and ~0.1 s more until
its first token (measured with the bundled CLI 2.1.33x). N sessions starting at once on C
cores all boot together, so every one of them sees its first token only when the last boot
ends (N x 0.4 s / C). `BootSlots` admits at most `limit` boots at once, in arrival order, and
a boot holds its slot until the turn's first message from the CLI: the first sessions answer
in ~0.4 s, the last no later than before (the same CPU in another order).

Tried and dropped: running the CLIs a few `nice` steps below the server. Alone on the machine
a CLI at nice 5 took 20-30% more CPU and ~100 ms longer to its first token (bench/sdk.py, N =
1, eight rounds), which no gain under load made up for.
"""

from __future__ import annotations

import asyncio
from typing import Any


def cli_pid(client: Any) -> int | None:
    """The process id of a `ClaudeSDKClient`'s CLI (None before it is spawned or once gone)."""
    transport = getattr(client, "_transport", None)
    process = getattr(transport, "_process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


class BootSlot:
    """One admitted boot; `release` is idempotent."""

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self._semaphore = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class BootSlots:
    """At most `limit` CLIs booting at once (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(limit) if limit > 0 else None

    async def acquire(self) -> BootSlot:
        """Wait for a slot (cancellable: nothing is held until it returns)."""
        if self._semaphore is None:
            return BootSlot(None)
        await self._semaphore.acquire()
        return BootSlot(self._semaphore)
