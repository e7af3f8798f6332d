"""The moments of a turn, for whoever watches turns: metrics now, traces next.

The runner calls every observer at named moments; an observer never raises into the turn
(a failing one is logged and the turn goes on).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from app.backends.errors import UpstreamError
from app.backends.events import (
    AgentEvent,
    ContextChange,
    Finished,
    StatusNote,
    StepEnd,
    StepStart,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from app.observability import metrics

if TYPE_CHECKING:
    from app.context.ladder import Climb
    from app.turns.persist import Attempt
    from app.turns.runner import TurnRunner

# The backend events observers see (`TurnObserver.event`): the structure of a turn, not its
# token-by-token deltas (the reply's text is in `runner.reply` when the turn ends).
OBSERVED_EVENTS = (
    StepStart,
    StepEnd,
    ToolCallStart,
    ToolCallReady,
    ToolResult,
    UsageReport,
    ContextChange,
    StatusNote,
    Finished,
)

log = logging.getLogger(__name__)


class TurnObserver(Protocol):
    """Called by the runner at the moments of a turn."""

    def turn_started(self, runner: TurnRunner) -> None:
        """The turn's task began producing."""
        ...

    def attempt_started(self, runner: TurnRunner, attempt: Attempt) -> None:
        """An attempt (the first, a retry, a rung of the context ladder) calls the backend."""
        ...

    def event(self, runner: TurnRunner, event: AgentEvent) -> None:
        """The backend sent one of `OBSERVED_EVENTS` (a model call's usage, a tool call, its
        result, a compaction, the end of a step)."""
        ...

    def attempt_failed(
        self, runner: TurnRunner, error: UpstreamError, retry_in: float | None
    ) -> None:
        """An attempt failed; `retry_in` seconds until the next one, or None if none."""
        ...

    def climbed(self, runner: TurnRunner, climb: Climb, reason: str) -> None:
        """The context ladder built the context of `climb.rung` (a compaction, a trim)."""
        ...

    def turn_finished(self, runner: TurnRunner) -> None:
        """The turn is persisted and its session released."""
        ...


class MetricsObserver:
    """Prometheus counters and histograms of turns (`app/observability/metrics.py`).

    Tokens and cost are counted once, when the turn ends, from what its row stores: the
    metrics then agree with `GET /sessions/{id}/turns`, and nothing is counted per event."""

    def turn_started(self, runner: TurnRunner) -> None:
        """Count the turn as started and active."""
        metrics.TURNS_ACTIVE.inc()
        metrics.TURNS_STARTED.labels(runner.services.backend.name).inc()

    def attempt_started(self, runner: TurnRunner, attempt: Attempt) -> None:
        """Nothing to count: retries and climbs are counted where they are decided."""

    def event(self, runner: TurnRunner, event: AgentEvent) -> None:
        """Count the backend's own compactions (the CLI's, `method: "cli"`)."""
        if isinstance(event, ContextChange):
            metrics.COMPACTIONS.labels(event.method, event.trigger).inc()

    def climbed(self, runner: TurnRunner, climb: Climb, reason: str) -> None:
        """Count the rung the ladder reached, and the compaction that built it."""
        metrics.CONTEXT_RUNGS.labels(str(climb.rung), reason).inc()
        if climb.change is not None:
            metrics.COMPACTIONS.labels(climb.change.method, climb.change.trigger).inc()

    def attempt_failed(
        self, runner: TurnRunner, error: UpstreamError, retry_in: float | None
    ) -> None:
        """Count a retry."""
        if retry_in is not None:
            metrics.UPSTREAM_RETRIES.labels(error.code).inc()

    def turn_finished(self, runner: TurnRunner) -> None:
        """Count the outcome, its tokens and cost; observe time to first token and duration."""
        outcome = runner.outcome
        backend = runner.services.backend.name
        metrics.TURNS_ACTIVE.dec()
        metrics.TURNS_FINISHED.labels(
            backend, outcome.status, outcome.error.code if outcome.error else ""
        ).inc()
        if runner.first_visible_at is not None:
            metrics.TTFT_SECONDS.labels(backend).observe(
                (runner.first_visible_at - runner.started_at).total_seconds()
            )
        metrics.TURN_SECONDS.labels(backend).observe(time.monotonic() - runner.started)
        model = runner.request.model
        usage = runner.adapter.usage
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        for kind, count in zip(metrics.TOKEN_KINDS, counts, strict=True):
            if count:
                metrics.TOKENS.labels(model, kind).inc(count)
        metrics.COST_USD.labels(model).inc(float(runner.cost))


def notify(observers: list[TurnObserver], moment: str, *args: object) -> None:
    """Call `moment` on every observer that has it; a failing observer never fails the turn."""
    for observer in observers:
        method = getattr(observer, moment, None)
        if method is None:
            continue
        try:
            method(*args)
        except Exception:
            log.exception("turn observer %s failed at %s", type(observer).__name__, moment)
