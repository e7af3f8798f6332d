"""What a backend yields: `AgentEvent`s, independent of HTTP, SSE and the AI SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.store.usage import Usage

FinishReason = Literal["stop", "length", "tool-calls", "error", "other"]


@dataclass(slots=True)
class StepStart:
    """A model call begins."""


@dataclass(slots=True)
class StepEnd:
    """A model call ended."""


@dataclass(slots=True)
class TextStart:
    id: str


@dataclass(slots=True)
class TextDelta:
    id: str
    delta: str


@dataclass(slots=True)
class TextEnd:
    id: str


@dataclass(slots=True)
class ReasoningStart:
    id: str


@dataclass(slots=True)
class ReasoningDelta:
    id: str
    delta: str


@dataclass(slots=True)
class ReasoningEnd:
    id: str
    signature: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    call_id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    call_id: str
    delta: str


@dataclass(slots=True)
class ToolCallReady:
    call_id: str
    name: str
    input: Any


@dataclass(slots=True)
class ToolResult:
    call_id: str
    output: Any
    error: str | None = None


@dataclass(slots=True)
class UsageReport:
    """Tokens of a model call not reported yet.

    `estimate` is set while the call's output count is not final (the Messages API counts at
    most one output token at `message_start`, all of them at `message_delta`): it gives the
    call's output tokens estimated from what it streamed so far, which is what is billed if
    the call is cut before its final count comes.
    """

    usage: Usage
    model: str
    estimate: Callable[[], int] | None = None


@dataclass(slots=True)
class Finished:
    """The backend is done; `error_code` notes a non-fatal end such as max_output_tokens."""

    reason: FinishReason
    error_code: str | None = None


AgentEvent = (
    StepStart
    | StepEnd
    | TextStart
    | TextDelta
    | TextEnd
    | ReasoningStart
    | ReasoningDelta
    | ReasoningEnd
    | ToolCallStart
    | ToolCallDelta
    | ToolCallReady
    | ToolResult
    | UsageReport
    | Finished
)


@dataclass(slots=True)
class TurnRequest:
    """What a backend needs to answer: the visible history (UIMessages, oldest first)."""

    session_id: str
    turn_id: str
    history: list[dict[str, Any]]
    model: str
    system_prompt: str
    max_tokens: int
    context_rung: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """Runs one attempt of a turn; raises `UpstreamError` for upstream failures."""

    name: str

    def run(self, request: TurnRequest) -> AsyncIterator[AgentEvent]:
        """Stream the events of one attempt."""
        ...
