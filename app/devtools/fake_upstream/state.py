"""Configuration and mutable state of one fake upstream: plan queue, request log, caches.

The state is shared between the server's event loop and, in-process, the test thread that
holds the handle, so every method takes a lock (never held across an await).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.devtools.fake_upstream.cache import PromptCache
from app.devtools.fake_upstream.script import ReplyPlan


@dataclass(frozen=True, slots=True)
class FakeUpstreamConfig:
    """Knobs of a fake upstream; every one has a sensible default."""

    context_tokens: int = 200_000
    """Requests whose estimated input exceeds this get `prompt is too long`."""
    default_rate: float = 0.0
    """Output tokens per second when a plan names no rate; 0 streams as fast as possible."""
    tick_seconds: float = 0.05
    """Least time between two writes of a paced stream; due tokens are grouped per write."""
    max_tokens_per_delta: int = 16
    """Most token pieces in one content_block_delta."""
    request_log_size: int = 1_000
    """Entries kept by the request log (oldest dropped first)."""
    cache_entries: int = 10_000
    """Prefix hashes kept by the prompt cache (least recently used dropped first)."""


class FakeUpstreamState:
    """The plan queue, request log, error counters and prompt cache of one fake upstream."""

    def __init__(self, config: FakeUpstreamConfig) -> None:
        self.config = config
        self.cache = PromptCache(config.cache_entries)
        self._queue: deque[ReplyPlan] = deque()
        self._log: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self._error_counts: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def enqueue(self, plans: Iterable[ReplyPlan]) -> int:
        """Append plans to the FIFO queue; return its new length."""
        with self._lock:
            self._queue.extend(plans)
            return len(self._queue)

    def pop_plan(self) -> ReplyPlan | None:
        """Take the oldest queued plan, if any."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def record(self, entry: dict[str, Any]) -> None:
        """Append one request to the log."""
        with self._lock:
            self._log.append(entry)

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Return a copy of the request log, optionally only one path."""
        with self._lock:
            return [dict(e) for e in self._log if path is None or e["path"] == path]

    def count_error(self, key: bytes) -> int:
        """Return how many times the error keyed `key` has fired, and count this one."""
        with self._lock:
            seen = self._error_counts.get(key, 0)
            self._error_counts[key] = seen + 1
            return seen

    def reset(self) -> None:
        """Clear the queue, the log, the error counters and the prompt cache."""
        with self._lock:
            self._queue.clear()
            self._log.clear()
            self._error_counts.clear()
        self.cache.clear()
