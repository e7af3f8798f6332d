"""SDK messages -> `AgentEvent`s, and the CLI's errors -> the shared taxonomy.

What the CLI sends for one model call with `include_partial_messages=True` (measured with the
bundled CLI): `StreamEvent`s carrying the Messages API's raw events (`message_start`,
`content_block_start`, deltas, ...), and for each content block an `AssistantMessage` holding
that block complete, sent just before the block's `content_block_stop`. Deltas are forwarded
token by token; a block is closed when its `AssistantMessage` arrives, because that message is
authoritative: after a dropped upstream connection the CLI retries without streaming, and the
tail the deltas lacked (or a whole block that never streamed) arrives only there.

The stream looks as on the Messages API backend: one step per model call, tool results inside
the step that asked for them (the step closes at the next call, or at the end), tool names as
the user knows them (`public_name`). Messages of sub-agents (`parent_tool_use_id` set) are not
shown: their outcome reaches the stream as the `Task` tool's result.

Usage is reported per model call from the stream's counters (cumulative within a message), and
at the `ResultMessage` whatever its per-turn `usage` holds beyond that (calls that did not
stream: the non-streaming retry, the CLI's own compaction). `total_cost_usd` and
`model_usage` are cumulative over a CLI process and restart at zero after a resume: never used.

The CLI's own compaction (measured with the bundled CLI 2.1.330): a `status` message with
`status: "compacting"` (a transient `data-status`; it comes even when the CLI then finds too
little to compact), then, when it compacted, a `compact_boundary` message whose
`compact_metadata` holds `trigger` ("auto" or "manual"), `pre_tokens` and `post_tokens`: that
becomes a `ContextChange(method="cli")`, stored with the reply. Next comes a `UserMessage`
holding the CLI's summary (`isCompactSummary` in its transcript; the SDK drops the flag): a
user message's text is never chat content, only its tool results are. The summary's model
call does not stream.

API errors never raise from a `ClaudeSDKClient`: they arrive as a synthetic `AssistantMessage`
(model `<synthetic>`, `error` set, its text a message for a terminal user: never shown) and
a `ResultMessage` with `is_error` (its `subtype` says "success" even then).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from claude_agent_sdk import (
    AssistantMessage,
    Message,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

from app.backends.errors import ErrorCode, UpstreamError, code_for_status
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

log = logging.getLogger(__name__)

SYNTHETIC_MODEL = "<synthetic>"
ABORTED = frozenset({"aborted_streaming", "aborted_tools"})
STOPPED_TOOL = "The tool call was stopped."

ASSISTANT_ERRORS: dict[str, ErrorCode] = {
    "authentication_failed": "auth_failed",
    "billing_error": "billing",
    "rate_limit": "rate_limited",
    "invalid_request": "invalid_request",
    "server_error": "upstream_unavailable",
    "unknown": "upstream_unavailable",
}
_USAGE_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


def usage_of(counters: dict[str, Any] | None) -> Usage:
    """The token counters of an API `usage` object (absent or null ones count as 0)."""
    usage = Usage()
    for api_name, name in _USAGE_FIELDS:
        value = (counters or {}).get(api_name)
        if isinstance(value, int):
            setattr(usage, name, value)
    return usage


def result_error(
    result: ResultMessage, assistant_error: str | None = None, text: str = ""
) -> UpstreamError | None:
    """The taxonomy error a `ResultMessage` reports (None: the turn ended normally or was
    stopped). `assistant_error` and `text` come from the turn's synthetic `AssistantMessage`."""
    if result.terminal_reason in ABORTED or not result.is_error:
        return None
    detail = text or "; ".join(result.errors or []) or (result.result or "")
    if result.terminal_reason == "prompt_too_long":
        return UpstreamError("prompt_too_long", detail, status=result.api_error_status)
    if result.terminal_reason == "max_turns" or result.subtype == "error_max_turns":
        return UpstreamError("tool_loop_limit", detail)
    if result.api_error_status is not None:
        code = code_for_status(result.api_error_status, detail)
        return UpstreamError(code, detail, status=result.api_error_status)
    if assistant_error is not None:
        code = ASSISTANT_ERRORS.get(assistant_error, "upstream_unavailable")
        if code == "invalid_request" and "prompt is too long" in detail.lower():
            code = "prompt_too_long"
        return UpstreamError(code, detail)
    if result.subtype == "error_during_execution":
        return UpstreamError("internal", detail or "the CLI failed during the turn")
    return UpstreamError("upstream_unavailable", detail or "the CLI reported an error")


def tool_output(content: str | list[dict[str, Any]] | None) -> Any:
    """A tool result as the Messages API backend stores it: the JSON value the tool returned
    when its text is JSON, else the text."""
    if isinstance(content, list):
        text = "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
    else:
        text = content or ""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


@dataclass(slots=True, eq=False)
class _Block:
    kind: str  # text | thinking | tool_use | redacted_thinking
    id: str
    name: str = ""
    parts: list[str] = field(default_factory=list)
    signature: str | None = None


class TurnMapper:
    """Turns one turn's SDK messages into `AgentEvent`s (one instance per attempt)."""

    def __init__(
        self, turn_id: str, model: str, public_name: Callable[[str], str] = lambda n: n
    ) -> None:
        self.prefix = turn_id[:8]
        self.model = model
        self.public_name = public_name
        self.step_open = False
        self.visible = False
        self.calls = 0
        self.by_index: dict[int, _Block] = {}
        self.pending: list[_Block] = []  # streamed blocks whose AssistantMessage is due
        self.message_usage = Usage()
        self.reported = Usage()  # usage reported so far this turn
        self.stop_reason: str | None = None
        self.assistant_error: str | None = None
        self.error_text = ""
        self.result: ResultMessage | None = None
        self.compactions = 0
        self.stopping = False  # interrupt() was sent: error tool results are stopped calls
        self.empty_tool_errors = 0  # tool calls in a row with no input that failed
        self._empty_calls: set[str] = set()

    def feed(self, message: Message) -> list[AgentEvent]:
        """The events one SDK message means."""
        if isinstance(message, StreamEvent):
            return [] if message.parent_tool_use_id else self._stream(message.event)
        if isinstance(message, AssistantMessage):
            return [] if message.parent_tool_use_id else self._assistant(message)
        if isinstance(message, UserMessage):
            return [] if message.parent_tool_use_id else self._tool_results(message)
        if isinstance(message, SystemMessage):
            return self._system(message)
        if isinstance(message, ResultMessage):
            self.result = message
            events = self.close()
            extra = usage_of(message.usage)
            events.extend(self._report(extra, cumulative_turn=True))
            return events
        return []

    def close(self) -> list[AgentEvent]:
        """Close whatever is open (a block without its AssistantMessage, the step)."""
        events: list[AgentEvent] = []
        for block in self.pending:
            events.extend(self._end(block))
        self.pending.clear()
        self.by_index.clear()
        if self.step_open:
            events.append(StepEnd())
            self.step_open = False
        return events

    def finished(self) -> Finished:
        """How a turn that ended without an error finished."""
        if self.result is not None and self.result.terminal_reason in ABORTED:
            return Finished("stop")
        reason = (self.result.stop_reason if self.result else None) or self.stop_reason
        if reason == "max_tokens":
            return Finished("length", "max_output_tokens")
        if reason in (None, "end_turn", "stop_sequence", "tool_use"):
            return Finished("stop")
        return Finished("other")

    def error(self) -> UpstreamError | None:
        """The error the turn's `ResultMessage` reports, if any."""
        if self.result is None:
            return UpstreamError("upstream_unavailable", "the CLI ended without a result")
        return result_error(self.result, self.assistant_error, self.error_text)

    # -- stream events --------------------------------------------------------------------

    def _open_step(self) -> list[AgentEvent]:
        if self.step_open:
            return []
        self.step_open = True
        self.calls += 1
        return [StepStart()]

    def _stream(self, event: dict[str, Any]) -> list[AgentEvent]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._block_start(event["index"], event.get("content_block") or {})
        if kind == "message_start":
            events = self.close()
            events.extend(self._open_step())
            self.stop_reason = None
            self.message_usage = usage_of((event.get("message") or {}).get("usage"))
            events.extend(self._report(self.message_usage))
            return events
        if kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            now = usage_of(event.get("usage"))
            grown = _minus(now, self.message_usage)
            self.message_usage = now
            return self._report(grown)
        if kind == "message_stop" and self.stop_reason != "tool_use":
            return self.close()
        return []

    def _block_start(self, index: int, content: dict[str, Any]) -> list[AgentEvent]:
        events = self._open_step()
        kind = content.get("type", "text")
        ordinal = f"{self.prefix}-{self.calls}-{index}"
        if kind == "tool_use":
            block = _Block("tool_use", content["id"], self.public_name(content.get("name", "")))
            events.append(ToolCallStart(block.id, block.name))
        elif kind == "thinking":
            block = _Block("thinking", f"{ordinal}r")
            events.append(ReasoningStart(block.id))
        elif kind == "text":
            block = _Block("text", f"{ordinal}t")
            events.append(TextStart(block.id))
        else:
            block = _Block(kind, f"{ordinal}x")
        self.visible = self.visible or kind in ("tool_use", "thinking", "text")
        self.by_index[index] = block
        self.pending.append(block)
        return events

    def _delta(self, event: dict[str, Any]) -> list[AgentEvent]:
        block = self.by_index.get(event.get("index", -1))
        if block is None or block not in self.pending:
            return []
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            block.parts.append(delta["text"])
            return [TextDelta(block.id, delta["text"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            block.parts.append(delta["thinking"])
            return [ReasoningDelta(block.id, delta["thinking"])]
        if kind == "input_json_delta" and delta.get("partial_json"):
            block.parts.append(delta["partial_json"])
            return [ToolCallDelta(block.id, delta["partial_json"])]
        if kind == "signature_delta":
            block.signature = delta.get("signature")
        return []

    def _end(self, block: _Block, complete: Any = None) -> list[AgentEvent]:
        """Close a block; `complete` is its authoritative content, if known."""
        events: list[AgentEvent] = []
        streamed = "".join(block.parts)
        if block.kind in ("text", "thinking"):
            full = complete if isinstance(complete, str) else streamed
            if full.startswith(streamed) and len(full) > len(streamed):
                tail = full[len(streamed) :]
                block.parts.append(tail)
                events.append(
                    TextDelta(block.id, tail)
                    if block.kind == "text"
                    else ReasoningDelta(block.id, tail)
                )
            elif not full.startswith(streamed):
                log.warning("block %s: the streamed text differs from the final one", block.id)
            if block.kind == "text":
                events.append(TextEnd(block.id))
            else:
                events.append(ReasoningEnd(block.id, block.signature))
        elif block.kind == "tool_use":
            if complete is None:
                try:
                    complete = orjson.loads(streamed or "{}")
                except orjson.JSONDecodeError:
                    complete = {"_raw": streamed}
            if not complete:
                self._empty_calls.add(block.id)
            events.append(ToolCallReady(block.id, block.name, complete))
        return events

    # -- complete messages ----------------------------------------------------------------

    def _assistant(self, message: AssistantMessage) -> list[AgentEvent]:
        if message.error is not None or message.model == SYNTHETIC_MODEL:
            self.assistant_error = message.error or self.assistant_error
            self.error_text = " ".join(
                b.text for b in message.content if isinstance(b, TextBlock)
            ).strip()
            return []
        events: list[AgentEvent] = []
        for content in message.content:
            value: Any
            if isinstance(content, TextBlock):
                kind, value = "text", content.text
            elif isinstance(content, ThinkingBlock):
                kind, value = "thinking", content.thinking
            elif isinstance(content, ToolUseBlock):
                kind, value = "tool_use", content.input
            else:
                continue
            block = next((b for b in self.pending if b.kind == kind), None)
            if block is None:  # it never streamed (the CLI's non-streaming retry)
                events.extend(self._open_step())
                index = -1 - len(self.by_index)
                if isinstance(content, ToolUseBlock):
                    raw = {"type": "tool_use", "id": content.id, "name": content.name}
                else:
                    raw = {"type": kind}
                events.extend(self._block_start(index, raw))
                block = self.by_index[index]
            if isinstance(content, ThinkingBlock):
                block.signature = content.signature or block.signature
            self.pending.remove(block)
            events.extend(self._end(block, value))
        return events

    def _tool_results(self, message: UserMessage) -> list[AgentEvent]:
        """The tool results a user message carries; its text (the CLI's summary after a
        compaction, a replayed prompt) is the CLI's, never shown."""
        if isinstance(message.content, str):
            return []
        events: list[AgentEvent] = []
        for content in message.content:
            if not isinstance(content, ToolResultBlock):
                continue
            output = tool_output(content.content)
            if content.is_error and self.stopping:
                # The CLI's text for a call cut by interrupt() is addressed to the model.
                events.append(ToolResult(content.tool_use_id, None, STOPPED_TOOL))
            elif content.is_error:
                text = output if isinstance(output, str) else orjson.dumps(output).decode()
                events.append(ToolResult(content.tool_use_id, None, text or "tool error"))
                if content.tool_use_id in self._empty_calls:
                    self.empty_tool_errors += 1
            else:
                events.append(ToolResult(content.tool_use_id, output))
                self.empty_tool_errors = 0
        return events

    def _system(self, message: SystemMessage) -> list[AgentEvent]:
        data = message.data
        if message.subtype == "api_retry":
            status = data.get("error_status")
            code = code_for_status(status, str(data.get("error", ""))) if status else None
            delay = data.get("retry_delay_ms")
            detail: dict[str, Any] = {"attempt": int(data.get("attempt", 1)) + 1, "by": "cli"}
            if code is not None:
                detail["code"] = code
            if isinstance(delay, int | float):
                detail["delay_s"] = round(delay / 1000, 3)
            return [StatusNote("retrying", detail)]
        if message.subtype == "status" and data.get("status") == "compacting":
            return [StatusNote("compacting", {})]
        if message.subtype == "compact_boundary":
            self.compactions += 1
            meta = data.get("compact_metadata") or {}
            return [
                ContextChange(
                    "cli",
                    str(meta.get("trigger") or "auto"),
                    _count(meta.get("pre_tokens")),
                    _count(meta.get("post_tokens")),
                )
            ]
        if message.subtype == "mirror_error":
            log.warning("transcript mirror failed: %s", data.get("error"))
        return []

    def _report(self, grown: Usage, *, cumulative_turn: bool = False) -> list[AgentEvent]:
        """Report usage not reported yet; with `cumulative_turn`, `grown` is the turn's
        total and only what exceeds the reported sum is new."""
        if cumulative_turn:
            grown = _minus(grown, self.reported)
        if not any((grown.input_tokens, grown.output_tokens, grown.cache_read_tokens,
                    grown.cache_write_tokens)):  # fmt: skip
            return []
        self.reported.add(grown)
        return [UsageReport(grown, self.model)]


def _count(value: Any) -> int | None:
    """A token count from the CLI's metadata (None when absent or not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _minus(a: Usage, b: Usage) -> Usage:
    """What `a` holds beyond `b`, counter by counter (never negative)."""
    return Usage(
        input_tokens=max(0, a.input_tokens - b.input_tokens),
        output_tokens=max(0, a.output_tokens - b.output_tokens),
        cache_read_tokens=max(0, a.cache_read_tokens - b.cache_read_tokens),
        cache_write_tokens=max(0, a.cache_write_tokens - b.cache_write_tokens),
    )
