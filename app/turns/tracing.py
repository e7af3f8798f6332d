"""The moments of a turn as a Langfuse trace: the same shape on both backends.

```
chat-turn (span; user, session, tags [backend, model],
│           metadata: turn id, trigger, conflict policy, rung, replica)
├── model-call (generation per model call: model, usage details, cost details from the rate card)
├── tool:<name> (tool: input and output truncated; level ERROR when it failed or was denied)
├── retry (span: the error, and the backoff until the next attempt; the CLI's own retries too)
├── context-rung-<n> (span: a climb of the context ladder) └── compaction-summary (generation)
└── compaction (span: the Claude Code CLI compacted its own context)
```

Usage comes only from the backend's `UsageReport`s (and a climb's summary): per model call,
or the remainder the SDK backend reports from the turn's `ResultMessage.usage`, never the
CLI's cumulative `total_cost_usd`. When the turn ends, whatever the turn row bills beyond
what the generations hold (the estimated output of a call cut short) goes to the open call,
or to a `usage-remainder` generation: the trace's usage and cost are the turn row's.

Every method only builds spans in memory (`app/observability/tracing.py` says how they leave).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import orjson
from langfuse import propagate_attributes
from langfuse._client.attributes import LangfuseOtelSpanAttributes

from app.backends.errors import UpstreamError
from app.backends.events import (
    AgentEvent,
    ContextChange,
    StatusNote,
    StepEnd,
    StepStart,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from app.config import Rate
from app.observability.tracing import Tracer
from app.store.usage import MILLION, Usage

if TYPE_CHECKING:
    from langfuse._client.span import LangfuseObservationWrapper

    from app.context.ladder import Climb
    from app.turns.persist import Attempt
    from app.turns.runner import TurnRunner

log = logging.getLogger(__name__)

TRACE_NAME = "chat-turn"
MAX_IO_CHARS = 2000  # of a tool's input or output, the user's message, the reply


def truncated(value: Any, limit: int = MAX_IO_CHARS) -> Any:
    """`value` as text cut to `limit` characters when it is longer (else as it is)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) <= limit:
        return value
    return text[:limit] + f"… [{len(text) - limit} more characters]"


def usage_details(usage: Usage) -> dict[str, int]:
    """Token counts as Langfuse names them for Anthropic models."""
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def cost_details(usage: Usage, rate: Rate | None) -> dict[str, float]:
    """USD per usage kind at the rate card's price (nothing without one), and the total."""
    if rate is None:
        return {}
    parts = {
        "input": rate.input * usage.input_tokens,
        "output": rate.output * usage.output_tokens,
        "cache_read_input_tokens": rate.cache_read * usage.cache_read_tokens,
        "cache_creation_input_tokens": rate.cache_write * usage.cache_write_tokens,
    }
    costs = {key: float(value / MILLION) for key, value in parts.items()}
    costs["total"] = float(sum(parts.values(), Decimal(0)) / MILLION)
    return costs


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens - b.input_tokens,
        output_tokens=a.output_tokens - b.output_tokens,
        cache_read_tokens=a.cache_read_tokens - b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens - b.cache_write_tokens,
    )


def _any(usage: Usage) -> bool:
    return any(
        (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens)
    )


@dataclasses.dataclass
class _Call:
    """A model call being traced, and the usage reported for it so far."""

    span: LangfuseObservationWrapper
    model: str
    usage: Usage = dataclasses.field(default_factory=Usage)


class TurnTrace:
    """The open spans of one turn."""

    def __init__(self, tracer: Tracer, runner: TurnRunner) -> None:
        request, services = runner.request, runner.services
        self.runner = runner
        self.tracer = tracer
        self.traced = Usage()  # what the generations hold so far
        self.call: _Call | None = None
        self.tools: dict[str, LangfuseObservationWrapper] = {}
        self.retry: LangfuseObservationWrapper | None = None
        # On every span (Langfuse aggregates by user and session over observations); the
        # trace's metadata goes on its root only, the rung once the turn knows it.
        self.attributes: dict[str, Any] = {
            "user_id": request.user_id or None,
            "session_id": request.session_id,
            "tags": [services.backend.name, request.model],
            "trace_name": TRACE_NAME,
        }
        metadata = {
            "turn_id": runner.turn_id,
            "trigger": runner.trigger,
            "conflict_policy": runner.on_conflict,
            "replica": services.replica_id,
        }
        with propagate_attributes(**self.attributes, metadata=metadata):
            self.root = tracer.client.start_observation(
                name=TRACE_NAME,
                as_type="span",
                input=truncated(_user_text(request.history)),
                metadata={"backend": services.backend.name, "model": request.model},
            )
        self.trace_id = self.root.trace_id

    @contextlib.contextmanager
    def _in_trace(self) -> Iterator[None]:
        """Spans started here carry the trace's user, session, tags and metadata."""
        with propagate_attributes(**self.attributes):
            yield

    def child(
        self, name: str, parent: LangfuseObservationWrapper | None = None, **kwargs: Any
    ) -> LangfuseObservationWrapper:
        """A new observation under `parent` (the root by default)."""
        with self._in_trace():
            span = (parent or self.root).start_observation(name=name, **kwargs)
        return cast("LangfuseObservationWrapper", span)

    # -- model calls -------------------------------------------------------------------

    def open_call(self, model: str) -> _Call:
        """The current model call, opened if none is."""
        if self.call is None:
            span = self.child("model-call", as_type="generation", model=model)
            self.call = _Call(span, model)
        return self.call

    def close_call(self) -> None:
        """End the current model call with the usage it was billed."""
        call, self.call = self.call, None
        if call is None:
            return
        rate = self.runner.services.settings.rate_for(call.model)
        call.span.update(
            model=call.model,
            usage_details=usage_details(call.usage),
            cost_details=cost_details(call.usage, rate),
        )
        call.span.end()

    def bill(self, usage: Usage, model: str) -> None:
        """Usage of the current call, or of a call that did not stream (a generation of its
        own: the SDK backend's remainder from `ResultMessage.usage`)."""
        if self.call is None:
            self.open_call(model)
            assert self.call is not None
            self.call.usage.add(usage)
            self.traced.add(usage)
            self.close_call()
            return
        self.call.model = model or self.call.model
        self.call.usage.add(usage)
        self.traced.add(usage)

    # -- the moments -------------------------------------------------------------------

    def event(self, event: AgentEvent) -> None:
        """One structural event of the backend."""
        if isinstance(event, StepStart):
            self.close_retry()
            self.open_call(self.runner.request.model)
        elif isinstance(event, StepEnd):
            self.close_call()
        elif isinstance(event, UsageReport):
            self.bill(event.usage, event.model)
        elif isinstance(event, ToolCallStart):
            self.tools[event.call_id] = self.child(
                f"tool:{event.name}", as_type="tool", metadata={"call_id": event.call_id}
            )
        elif isinstance(event, ToolCallReady):
            span = self.tools.get(event.call_id)
            if span is None:
                span = self.tools[event.call_id] = self.child(
                    f"tool:{event.name}", as_type="tool", metadata={"call_id": event.call_id}
                )
            span.update(input=truncated(event.input))
        elif isinstance(event, ToolResult):
            self.tool_result(event)
        elif isinstance(event, StatusNote) and event.status == "retrying":
            # The backend's own retry of a model call (the CLI's): a retry span as well.
            self.close_call()
            self.close_retry()
            self.retry = self.child("retry", level="WARNING", metadata=dict(event.detail))
        elif isinstance(event, ContextChange):
            self.child(
                "compaction",
                metadata=dataclasses.asdict(event),
            ).end()

    def tool_result(self, result: ToolResult) -> None:
        """End a tool call's span with its output, or its error."""
        span = self.tools.pop(result.call_id, None)
        if span is None:
            span = self.child("tool", as_type="tool", metadata={"call_id": result.call_id})
        if result.error is not None:
            span.update(
                output=truncated(result.error), level="ERROR", status_message=result.error[:200]
            )
        else:
            span.update(output=truncated(result.output))
        span.end()

    def attempt_started(self, attempt: Attempt) -> None:
        """The backoff before this attempt is over."""
        self.close_retry()

    def attempt_failed(self, error: UpstreamError, retry_in: float | None) -> None:
        """The attempt's open call and tools end; a retry opens its span."""
        self.close_call()
        self.close_tools()
        if retry_in is None:
            return
        self.close_retry()
        self.retry = self.child(
            "retry",
            level="WARNING",
            status_message=f"{error.code}: {error.public_message}"[:200],
            metadata={
                "code": error.code,
                "attempt": len(self.runner.attempts),
                "retry_in_s": round(retry_in, 3),
            },
        )

    def climbed(self, climb: Climb, reason: str) -> None:
        """A span for the rung, and a generation for the summary that built it."""
        self.close_call()
        change = climb.change
        span = self.child(
            f"context-rung-{climb.rung}",
            metadata={
                "rung": climb.rung,
                "reason": reason,
                "method": change.method if change else None,
                "tokens_before": change.tokens_before if change else None,
                "tokens_after": change.tokens_after if change else None,
            },
        )
        if climb.usage is not None and _any(climb.usage):
            model = climb.model or self.runner.request.model
            rate = self.runner.services.settings.rate_for(model)
            self.child(
                "compaction-summary",
                span,
                as_type="generation",
                model=model,
                usage_details=usage_details(climb.usage),
                cost_details=cost_details(climb.usage, rate),
            ).end()
            self.traced.add(climb.usage)
        span.end()

    def close_retry(self) -> None:
        """End the backoff span, if one is open."""
        retry, self.retry = self.retry, None
        if retry is not None:
            retry.end()

    def close_tools(self) -> None:
        """End the spans of tool calls that got no result (the attempt ended first)."""
        for span in self.tools.values():
            span.update(level="WARNING", status_message="the tool call got no result")
            span.end()
        self.tools.clear()

    def finished(self) -> None:
        """Reconcile the usage with the turn row's, end every span, and the trace."""
        runner = self.runner
        remainder = _minus(runner.adapter.usage, self.traced)
        if _any(remainder):
            if self.call is None:
                self.call = _Call(
                    self.child("usage-remainder", as_type="generation"), runner.request.model
                )
            self.call.usage.add(remainder)
        self.close_call()
        self.close_tools()
        self.close_retry()
        outcome = runner.outcome
        error = outcome.error
        rung = max((a.context_rung for a in runner.attempts), default=runner.request.context_rung)
        self.root._otel_span.set_attribute(
            f"{LangfuseOtelSpanAttributes.TRACE_METADATA}.rung", orjson.dumps(str(rung)).decode()
        )
        self.root.update(
            output=truncated(_reply_text(runner.reply.parts())),
            level="ERROR" if outcome.status == "failed" else None,
            status_message=f"{error.code}: {error.public_message}"[:200] if error else None,
            metadata={
                "status": outcome.status,
                "finish_reason": outcome.finish_reason,
                "error_code": error.code if error else outcome.note_code,
                "attempts": len(runner.attempts),
                "rung": rung,
                "cost_usd": str(runner.cost),
            },
        )
        self.root.end()


class TracingObserver:
    """A `TurnObserver` that traces every turn of this replica in Langfuse."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.turns: dict[str, TurnTrace] = {}

    def turn_started(self, runner: TurnRunner) -> None:
        """Open the turn's trace; its id goes to the turn row."""
        trace = TurnTrace(self.tracer, runner)
        self.turns[runner.turn_id] = trace
        runner.trace_id = trace.trace_id

    def attempt_started(self, runner: TurnRunner, attempt: Attempt) -> None:
        """End the backoff before a retry."""
        if trace := self.turns.get(runner.turn_id):
            trace.attempt_started(attempt)

    def event(self, runner: TurnRunner, event: AgentEvent) -> None:
        """Model calls, their usage, tool calls, the CLI's compactions."""
        if trace := self.turns.get(runner.turn_id):
            trace.event(event)

    def attempt_failed(
        self, runner: TurnRunner, error: UpstreamError, retry_in: float | None
    ) -> None:
        """A retry span."""
        if trace := self.turns.get(runner.turn_id):
            trace.attempt_failed(error, retry_in)

    def climbed(self, runner: TurnRunner, climb: Climb, reason: str) -> None:
        """A rung span, with the summary's generation."""
        if trace := self.turns.get(runner.turn_id):
            trace.climbed(climb, reason)

    def turn_finished(self, runner: TurnRunner) -> None:
        """End the trace."""
        if trace := self.turns.pop(runner.turn_id, None):
            trace.finished()


def _user_text(history: list[dict[str, Any]]) -> str:
    for message in reversed(history):
        if message.get("role") == "user":
            return _reply_text(message.get("parts") or [])
    return ""


def _reply_text(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")
