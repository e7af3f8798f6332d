"""Token usage of a model call or a turn, and its price from the rate card."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.config import Rate

MILLION = Decimal(1_000_000)
# Output tokens of a model call cut before the upstream counted them (a stop, a dropped stream)
# are estimated from the characters it streamed: one token per four characters, rounded up,
# the usual rule of thumb for English text (an estimate, not the tokenizer's count).
CHARS_PER_TOKEN = 4


def estimated_tokens(chars: int) -> int:
    """Output tokens billed for `chars` streamed characters when no count came."""
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(slots=True)
class Usage:
    """Tokens billed for one or more model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def all_input_tokens(self) -> int:
        """Input tokens of every kind: uncached, read from the cache, written to it."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def add(self, other: Usage) -> None:
        """Accumulate another call's usage into this one."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens

    def cost(self, rate: Rate | None) -> Decimal:
        """The price in USD at `rate` (zero when the model has no rate)."""
        if rate is None:
            return Decimal(0)
        total = (
            rate.input * self.input_tokens
            + rate.output * self.output_tokens
            + rate.cache_read * self.cache_read_tokens
            + rate.cache_write * self.cache_write_tokens
        )
        return (total / MILLION).quantize(Decimal("0.000001"))

    def as_dict(self) -> dict[str, int]:
        """Plain counters, as stored and as sent in `finish` metadata."""
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheReadTokens": self.cache_read_tokens,
            "cacheWriteTokens": self.cache_write_tokens,
        }
