"""What a backend yields: `AgentEvent`s, independent of HTTP, SSE and the AI SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.backends.errors import UpstreamError
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


@dataclass(slots=True)
class StatusNote:
    """Something the user may want to know that is not content (a transient `data-status`):
    the backend's own retry of the upstream, a compaction."""

    status: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ContextChange:
    """The model's context was made smaller: a marker stored with the reply (`data-context`),
    so the UI can say "earlier messages were summarised".

    `method`: "summary" (a model wrote one), "truncation" (the summary failed: the oldest
    messages were dropped instead), "trim" (the DB-only rung: the newest stored messages that
    fit) or "cli" (the Claude Code CLI compacted its own transcript). `trigger`: what asked
    for it ("prompt_too_long", "proactive", or the CLI's own "auto" / "manual")."""

    method: str
    trigger: str
    tokens_before: int | None = None
    tokens_after: int | None = None


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
    | StatusNote
    | ContextChange
    | Finished
)


@dataclass(slots=True)
class TurnRequest:
    """What a backend needs to answer: the visible history (UIMessages, oldest first).

    Nothing here is specific to one backend: each backend holds its own configuration
    (system prompt, output limit, options) and `model` is the backend's own default.

    `context_rung` is the context ladder's rung (`app/context/ladder.py`): 1, the full context
    (the stored history, or a backend's own transcript); 2 and 3, a context the runner built
    (compacted, or the newest stored messages that fit) and put in `history`: the backend
    answers from `history` alone then, never from its own transcript.

    A backend that keeps its own context (`Backend.manages_context`) gets only the newest
    messages in `history` at first, and `full_history()` when it needs the rest (to seed a
    fresh context): a long conversation costs its turns nothing until then.
    """

    session_id: str
    turn_id: str
    history: list[dict[str, Any]]
    model: str
    user_id: str = ""
    context_rung: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    # Loads the whole history when `history` holds only its newest messages.
    history_loader: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None

    async def full_history(self) -> list[dict[str, Any]]:
        """The whole history (from the newest compaction on), loaded once if need be."""
        if self.history_loader is not None:
            self.history = await self.history_loader()
            self.history_loader = None
        return self.history


@dataclass
class TurnControl:
    """What the runner tells a backend while it runs: a stop was asked for, messages wait to
    steer the turn.

    A backend that can stop cleanly (the Claude SDK's `interrupt()`) watches `stop` and ends
    its attempt by itself, with what it has; the runner cancels the attempt only when it
    has not ended `Backend.stop_grace_s` after the stop.
    """

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    # Takes in the messages sent to steer the turn (`on_conflict: "steer"`) since the last
    # call: a backend asks between two model calls and gives their texts to the next one.
    steer: Callable[[], Awaitable[list[str]]] | None = None

    async def steers(self) -> list[str]:
        """The steering messages waiting for the turn's next model call (usually none)."""
        return await self.steer() if self.steer is not None else []

    def request_stop(self, reason: str) -> None:
        """Ask the running attempt to stop."""
        if self.reason is None:
            self.reason = reason
        self.stop.set()


class Backend(Protocol):
    """Runs attempts of turns; raises `UpstreamError` (or anything `classify` maps)."""

    name: str
    model: str
    # Seconds the runner waits after `TurnControl.stop` for the attempt to end by itself
    # before cancelling it (0: cancel at once; a Messages API stream can be dropped safely).
    stop_grace_s: float
    # Whether the full context (rung 1) is the backend's own and kept small by itself (the
    # CLI's transcript, which it compacts): the runner then never compacts ahead of a call.
    manages_context: bool

    def run(self, request: TurnRequest, control: TurnControl) -> AsyncIterator[AgentEvent]:
        """Stream the events of one attempt."""
        ...

    def classify(self, exc: BaseException) -> UpstreamError:
        """Map an exception raised by `run` onto the shared taxonomy."""
        ...

    async def forget_session(self, session_id: str) -> None:
        """Drop everything this backend keeps for a session (it is being deleted)."""
        ...

    async def close(self) -> None:
        """Release every process, client and file (the server is stopping)."""
        ...
