"""AgentEvent -> UI message chunks, keeping the stream well formed whatever the backend does.

Tools run on the server, so their chunks carry `providerExecuted: true`: the AI SDK then shows
them without calling the frontend's `onToolCall`.

Steps are opened lazily, on their first content, so a failed attempt that showed nothing
leaves no empty step behind; `close()` ends whatever is open (on errors and stops) so every
text part is closed before `finish-step` and every step before `finish`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from app.backends.events import (
    AgentEvent,
    ContextChange,
    Finished,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StatusNote,
    StepEnd,
    StepStart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from app.store.usage import Usage
from app.stream import chunks

Emit = Callable[[dict[str, Any]], None]


class ChunkAdapter:
    """Turns a backend's events into chunks passed to `emit`; tracks what became visible."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.visible = False
        self.step_open = False
        self.open_parts: dict[str, str] = {}  # id -> "text" | "reasoning"
        # Parts the backend started but that have no content yet: sent with their first
        # delta, so an attempt that fails before it leaves no empty part or step behind.
        self.pending_parts: dict[str, str] = {}
        self.tool_names: dict[str, str] = {}
        self._usage = Usage()
        self._estimate: Callable[[], int] | None = None  # of the call whose count is not final
        self._counted = 0  # the output tokens that call reported so far
        self.finished: Finished | None = None

    @property
    def usage(self) -> Usage:
        """Tokens billed so far: a call whose final count never came (cut by a stop or an
        error) bills the output its backend estimates from what it streamed."""
        if self._estimate is None:
            return self._usage
        usage = dataclasses.replace(self._usage)
        usage.output_tokens += max(0, self._estimate() - self._counted)
        return usage

    def _content(self, chunk: dict[str, Any]) -> None:
        if not self.step_open:
            self.step_open = True
            self.emit({"type": "start-step"})
        self.emit(chunk)

    def _shown(self, chunk: dict[str, Any]) -> None:
        self.visible = True
        self._content(chunk)

    def _open(self, part_id: str, kind: str) -> None:
        """Send the part's start, once, before its first content."""
        if part_id in self.open_parts:
            return
        self.pending_parts.pop(part_id, None)
        self.open_parts[part_id] = kind
        self._content({"type": f"{kind}-start", "id": part_id})

    def handle(self, event: AgentEvent) -> None:
        """Translate one event."""
        if isinstance(event, TextDelta):
            self._open(event.id, "text")
            self._shown({"type": "text-delta", "id": event.id, "delta": event.delta})
        elif isinstance(event, ReasoningDelta):
            self._open(event.id, "reasoning")
            self._shown({"type": "reasoning-delta", "id": event.id, "delta": event.delta})
        elif isinstance(event, TextStart | ReasoningStart):
            self.pending_parts[event.id] = "text" if isinstance(event, TextStart) else "reasoning"
        elif isinstance(event, TextEnd | ReasoningEnd):
            signature = event.signature if isinstance(event, ReasoningEnd) else None
            if signature and event.id in self.pending_parts:
                self._open(event.id, "reasoning")  # an empty thinking block keeps its signature
            kind = self.open_parts.pop(event.id, "")
            self.pending_parts.pop(event.id, None)
            if not kind:
                return
            chunk: dict[str, Any] = {"type": f"{kind}-end", "id": event.id}
            if signature:
                chunk["providerMetadata"] = {"anthropic": {"signature": signature}}
            self.emit(chunk)
        elif isinstance(event, ToolCallStart):
            self.tool_names[event.call_id] = event.name
            self._shown(
                {
                    "type": "tool-input-start",
                    "toolCallId": event.call_id,
                    "toolName": event.name,
                    "providerExecuted": True,
                }
            )
        elif isinstance(event, ToolCallDelta):
            self._shown(
                {
                    "type": "tool-input-delta",
                    "toolCallId": event.call_id,
                    "inputTextDelta": event.delta,
                }
            )
        elif isinstance(event, ToolCallReady):
            self._shown(
                {
                    "type": "tool-input-available",
                    "toolCallId": event.call_id,
                    "toolName": event.name,
                    "input": event.input,
                    "providerExecuted": True,
                }
            )
        elif isinstance(event, ToolResult):
            if event.error is not None:
                self._shown(
                    {
                        "type": "tool-output-error",
                        "toolCallId": event.call_id,
                        "errorText": event.error,
                        "providerExecuted": True,
                    }
                )
            else:
                self._shown(
                    {
                        "type": "tool-output-available",
                        "toolCallId": event.call_id,
                        "output": event.output,
                        "providerExecuted": True,
                    }
                )
        elif isinstance(event, StepStart | StepEnd):
            self.end_step()
        elif isinstance(event, UsageReport):
            if self._estimate is not None and event.estimate is not None:
                self._usage = self.usage  # a new call: the previous one was cut
            self._usage.add(event.usage)
            self._counted = event.usage.output_tokens if event.estimate is not None else 0
            self._estimate = event.estimate
        elif isinstance(event, StatusNote):
            self.emit(chunks.data_status(event.status, **event.detail))
        elif isinstance(event, ContextChange):
            self.emit(chunks.data_context(event))
        elif isinstance(event, Finished):
            self.end_step()
            self.finished = event

    def end_step(self) -> None:
        """Close open parts, then the step, if one is open."""
        for part_id, kind in list(self.open_parts.items()):
            self.emit({"type": f"{kind}-end", "id": part_id})
        self.open_parts.clear()
        self.pending_parts.clear()
        if self.step_open:
            self.step_open = False
            self.emit({"type": "finish-step"})
