"""When to retry a failed upstream call: jittered exponential backoff within a budget."""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.config import TurnSettings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts and total time; the upstream's retry-after is honoured."""

    max_attempts: int
    max_total_s: float
    base_delay_s: float
    max_delay_s: float

    @classmethod
    def from_settings(cls, settings: TurnSettings) -> RetryPolicy:
        """The policy configured for turns."""
        return cls(
            max_attempts=settings.retry_max_attempts,
            max_total_s=settings.retry_max_total_s,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        )

    def delay(self, attempt: int, elapsed_s: float, retry_after_s: float | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when the budget is spent."""
        if attempt >= self.max_attempts:
            return None
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        wait = backoff * random.uniform(0.5, 1.0)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        if elapsed_s + wait > self.max_total_s:
            return None
        return float(wait)
