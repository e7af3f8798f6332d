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

Recorded now, built later. While the turn runs, the observer only notes plain facts: an
`_Observation` per future span (its name, parent, wall-clock start and end in nanoseconds,
and its Langfuse attributes, already encoded: JSON text made once, with orjson). Nothing of
the SDK or OpenTelemetry runs on the turn's path. When the turn has ended (its streams
released), the record goes to the tracer's builder thread (`Tracer.submit`), which makes
every span at once with its recorded start and end times, straight on the OpenTelemetry
tracer of the Langfuse client (its span processor and exporter as before), under the trace
id the turn was given when it started (`Tracer.emit`). Measured (per traced turn of
bench/relay.py's shape): making spans through the SDK's wrappers on the event loop cost
about 410 µs of the loop (and delayed the first tokens of a burst of turns); recording costs
about 35 µs, building 16 µs on the builder thread.

The attributes are those the SDK's `start_observation`/`update`/`propagate_attributes` would
set: `user.id`, `session.id`, `langfuse.trace.name`/`.tags` on every observation (values the
SDK would refuse to propagate, over 200 characters, are left out as it leaves them out), the
trace metadata on the root, `langfuse.observation.*` (type, input, output, metadata values
JSON-encoded one by one, level, status message; model, usage and cost details of a
generation), the OpenTelemetry status ERROR with the status message when the level is ERROR,
and the client's environment and release if it has them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from langfuse._client.attributes import LangfuseOtelSpanAttributes as A

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
from app.observability.tracing import Recorded, Tracer
from app.store.usage import MILLION, Usage
from app.stream.text import parts_text

if TYPE_CHECKING:
    from app.context.ladder import Climb
    from app.turns.persist import Attempt
    from app.turns.runner import TurnRunner

log = logging.getLogger(__name__)

TRACE_NAME = "chat-turn"
MAX_IO_CHARS = 2000  # of a tool's input or output, the user's message, the reply
MAX_PROPAGATED_CHARS = 200  # the SDK drops a longer user id, session id, tag or metadata value


def _json(value: Any) -> str:
    """`value` as JSON text (compact, UTF-8 as is: as the SDK encodes metadata values)."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits, say
        import json

        return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def truncated(value: Any, limit: int = MAX_IO_CHARS) -> str | None:
    """`value` as an observation's input or output: text as it is, anything else as JSON;
    cut to `limit` characters when it is longer."""
    if value is None:
        return None
    text = value if isinstance(value, str) else _json(value)
    if len(text) <= limit:
        return text
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


def _propagated(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_PROPAGATED_CHARS


class _Observation:
    """A span to be: what the SDK would have set on it, and when it started and ended."""

    __slots__ = ("attributes", "end", "error", "failed", "name", "parent", "start")

    def __init__(self, name: str, kind: str, parent: _Observation | None) -> None:
        self.name = name
        self.parent = parent
        self.attributes: dict[str, Any] = {A.OBSERVATION_TYPE: kind}
        self.start = time.time_ns()
        self.end: int | None = None
        self.failed = False  # level ERROR: the OpenTelemetry status is ERROR too
        self.error: str | None = None  # its description: the status message given with it

    def set(
        self,
        *,
        input: Any = None,
        output: Any = None,
        metadata: dict[str, Any] | None = None,
        level: str | None = None,
        status_message: str | None = None,
    ) -> _Observation:
        """What `update()` of the SDK sets (None leaves a field as it is)."""
        attributes = self.attributes
        if input is not None:
            attributes[A.OBSERVATION_INPUT] = truncated(input)
        if output is not None:
            attributes[A.OBSERVATION_OUTPUT] = truncated(output)
        if level is not None:
            attributes[A.OBSERVATION_LEVEL] = level
        if status_message is not None:
            attributes[A.OBSERVATION_STATUS_MESSAGE] = status_message
        if level == "ERROR":
            self.failed, self.error = True, status_message
        if metadata:
            for key, value in metadata.items():
                if value is not None:
                    attributes[f"{A.OBSERVATION_METADATA}.{key}"] = _json(value)
        return self

    def close(self) -> None:
        """End it now (once)."""
        if self.end is None:
            self.end = time.time_ns()


@dataclasses.dataclass
class _Call:
    """A model call being traced, and the usage reported for it so far."""

    observation: _Observation
    model: str
    usage: Usage = dataclasses.field(default_factory=Usage)


class TurnTrace:
    """The observations of one turn, recorded while it runs; spans once it has ended."""

    def __init__(self, tracer: Tracer, runner: TurnRunner) -> None:
        request, services = runner.request, runner.services
        self.runner = runner
        self.tracer = tracer
        self.trace_id = tracer.new_trace_id()
        self.traced = Usage()  # what the generations hold so far
        self.call: _Call | None = None
        self.tools: dict[str, _Observation] = {}
        self.retry: _Observation | None = None
        self.observations: list[_Observation] = []
        # On every span (Langfuse aggregates by user and session over observations); the
        # trace's metadata goes on its root only, the rung once the turn knows it.
        common: dict[str, Any] = {}
        if _propagated(request.user_id or None):
            common[A.TRACE_USER_ID] = request.user_id
        if _propagated(request.session_id):
            common[A.TRACE_SESSION_ID] = request.session_id
        tags = tuple(t for t in (services.backend.name, request.model) if _propagated(t))
        if tags:
            common[A.TRACE_TAGS] = tags
        common[A.TRACE_NAME] = TRACE_NAME
        common.update(tracer.defaults)
        self.common = common
        self.reply: list[dict[str, Any]] = []  # the reply's parts, once the turn has ended
        self.root = _Observation(TRACE_NAME, "span", None)
        self.observations.append(self.root)
        metadata = {
            "turn_id": runner.turn_id,
            "trigger": runner.trigger,
            "conflict_policy": runner.on_conflict,
            "replica": services.replica_id,
        }
        for key, value in metadata.items():
            encoded = _json(value)
            if len(encoded) <= MAX_PROPAGATED_CHARS:
                self.root.attributes[f"{A.TRACE_METADATA}.{key}"] = encoded
        self.root.set(
            input=_user_text(request.history),
            metadata={"backend": services.backend.name, "model": request.model},
        )

    def child(
        self, name: str, kind: str = "span", parent: _Observation | None = None
    ) -> _Observation:
        """A new observation under `parent` (the root by default)."""
        observation = _Observation(name, kind, parent or self.root)
        self.observations.append(observation)
        return observation

    # -- model calls -------------------------------------------------------------------

    def open_call(self, model: str) -> _Call:
        """The current model call, opened if none is."""
        if self.call is None:
            self.call = _Call(self.child("model-call", "generation"), model)
        return self.call

    def close_call(self) -> None:
        """End the current model call with the usage it was billed."""
        call, self.call = self.call, None
        if call is None:
            return
        self._generation(call.observation, call.model, call.usage)
        call.observation.close()

    def _generation(self, observation: _Observation, model: str, usage: Usage) -> None:
        rate = self.runner.services.settings.rate_for(model)
        attributes = observation.attributes
        attributes[A.OBSERVATION_MODEL] = model
        attributes[A.OBSERVATION_USAGE_DETAILS] = _json(usage_details(usage))
        attributes[A.OBSERVATION_COST_DETAILS] = _json(cost_details(usage, rate))

    def bill(self, usage: Usage, model: str) -> None:
        """Usage of the current call, or of a call that did not stream (a generation of its
        own: the SDK backend's remainder from `ResultMessage.usage`)."""
        if self.call is None:
            call = self.open_call(model)
            call.usage.add(usage)
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
            self.tools[event.call_id] = self._tool(event.name, event.call_id)
        elif isinstance(event, ToolCallReady):
            tool = self.tools.get(event.call_id)
            if tool is None:
                tool = self.tools[event.call_id] = self._tool(event.name, event.call_id)
            tool.set(input=event.input)
        elif isinstance(event, ToolResult):
            self.tool_result(event)
        elif isinstance(event, StatusNote) and event.status == "retrying":
            # The backend's own retry of a model call (the CLI's): a retry span as well.
            self.close_call()
            self.close_retry()
            self.retry = self.child("retry").set(level="WARNING", metadata=dict(event.detail))
        elif isinstance(event, ContextChange):
            self.child("compaction").set(metadata=dataclasses.asdict(event)).close()

    def _tool(self, name: str, call_id: str) -> _Observation:
        return self.child(f"tool:{name}", "tool").set(metadata={"call_id": call_id})

    def tool_result(self, result: ToolResult) -> None:
        """End a tool call's span with its output, or its error."""
        tool = self.tools.pop(result.call_id, None)
        if tool is None:
            tool = self.child("tool", "tool").set(metadata={"call_id": result.call_id})
        if result.error is not None:
            tool.set(output=result.error, level="ERROR", status_message=result.error[:200])
        else:
            tool.set(output=result.output)
        tool.close()

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
        self.retry = self.child("retry").set(
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
        rung = self.child(f"context-rung-{climb.rung}").set(
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
            summary = self.child("compaction-summary", "generation", rung)
            self._generation(summary, model, climb.usage)
            summary.close()
            self.traced.add(climb.usage)
        rung.close()

    def close_retry(self) -> None:
        """End the backoff span, if one is open."""
        retry, self.retry = self.retry, None
        if retry is not None:
            retry.close()

    def close_tools(self) -> None:
        """End the spans of tool calls that got no result (the attempt ended first)."""
        for tool in self.tools.values():
            tool.set(level="WARNING", status_message="the tool call got no result").close()
        self.tools.clear()

    def finished(self) -> None:
        """Reconcile the usage with the turn row's, end every observation, the root last;
        hand the trace to the builder thread."""
        runner = self.runner
        remainder = _minus(runner.adapter.usage, self.traced)
        if _any(remainder):
            if self.call is None:
                self.call = _Call(self.child("usage-remainder", "generation"), runner.request.model)
            self.call.usage.add(remainder)
        self.close_call()
        self.close_tools()
        self.close_retry()
        outcome = runner.outcome
        error = outcome.error
        rung = max((a.context_rung for a in runner.attempts), default=runner.request.context_rung)
        root = self.root
        root.attributes[f"{A.TRACE_METADATA}.rung"] = _json(str(rung))
        self.reply = runner.reply.parts()
        root.set(
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
        root.close()
        del self.runner  # the builder needs nothing more of the turn
        self.tracer.submit(self.build)

    def build(self) -> None:
        """Make the spans (on the builder thread), ended, with their recorded times."""
        self.root.attributes[A.OBSERVATION_OUTPUT] = truncated(parts_text(self.reply))
        index = {id(o): i for i, o in enumerate(self.observations)}
        self.tracer.emit(
            self.trace_id,
            [
                Recorded(
                    name=o.name,
                    parent=None if o.parent is None else index[id(o.parent)],
                    attributes={**self.common, **o.attributes},
                    start=o.start,
                    end=o.end or o.start,
                    error=(o.error,) if o.failed else None,
                )
                for o in self.observations
            ],
        )


class TracingObserver:
    """A `TurnObserver` that traces every turn of this replica in Langfuse."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.turns: dict[str, TurnTrace] = {}

    def turn_started(self, runner: TurnRunner) -> None:
        """Start recording the turn's trace; its id goes to the turn row."""
        trace = TurnTrace(self.tracer, runner)
        self.turns[runner.turn_id] = trace
        runner.trace_id = f"{trace.trace_id:032x}"

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
        """End the trace: its spans are made on the tracer's builder thread."""
        if trace := self.turns.pop(runner.turn_id, None):
            trace.finished()


def _user_text(history: list[dict[str, Any]]) -> str:
    for message in reversed(history):
        if message.get("role") == "user":
            return parts_text(message.get("parts") or [])
    return ""
