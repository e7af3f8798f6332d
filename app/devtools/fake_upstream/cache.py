"""A small prompt cache that turns `cache_control` breakpoints into plausible usage numbers.

Like the real API, a breakpoint caches the prefix up to and including its block, and a later
request reads the longest cached prefix that ends at one of its breakpoints or at one of the
`LOOKBACK_UNITS` unit boundaries before a breakpoint (so a conversation that moves its last
breakpoint forward still reads what the previous turn wrote). The three numbers always add
up to the estimate: input_tokens + cache_read_input_tokens + cache_creation_input_tokens.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from app.devtools.fake_upstream.tokens import InputEstimate

LOOKBACK_UNITS = 20


@dataclass(frozen=True, slots=True)
class InputUsage:
    """The input side of a response's usage."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class PromptCache:
    """An LRU map of cached prefix hashes; thread-safe."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[bytes, None] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def account(self, estimate: InputEstimate) -> InputUsage:
        """Split the estimate into uncached, cache-written and cache-read tokens, and record it."""
        boundaries = estimate.boundaries
        breakpoints = [i for i, b in enumerate(boundaries) if b.breakpoint]
        if not breakpoints:
            return InputUsage(estimate.total, 0, 0)
        read = 0
        with self._lock:
            for index in breakpoints:
                for j in range(index, max(-1, index - LOOKBACK_UNITS - 1), -1):
                    if boundaries[j].tokens <= read:
                        break
                    if boundaries[j].digest in self._entries:
                        self._entries.move_to_end(boundaries[j].digest)
                        read = boundaries[j].tokens
                        break
            for index in breakpoints:
                self._entries[boundaries[index].digest] = None
                self._entries.move_to_end(boundaries[index].digest)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        written = max(0, boundaries[breakpoints[-1]].tokens - read)
        return InputUsage(estimate.total - read - written, written, read)

    def clear(self) -> None:
        """Forget every cached prefix."""
        with self._lock:
            self._entries.clear()
