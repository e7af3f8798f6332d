"""What the terminal shows for UI message stream chunks: pure functions from chunks to writes.

Two styles. On a terminal (`color`): the reply on stdout, reasoning dimmed before it, each
tool call as one dim line with its result, transient statuses as dim notes. Plain (a pipe, a
file, `NO_COLOR`): stdout carries the reply's text and nothing else, so `copilot chat -m ... |
cat` gives a script the answer; tool lines, statuses and notes go to stderr, reasoning is
left out. Errors go to stderr in both.

A write is `(channel, text)` with channel "out" or "err": the caller prints them, tests read
them. Unknown chunk types are skipped: a newer server may send more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Channel = Literal["out", "err"]
Write = tuple[Channel, str]

DIM, UNDIM = "\x1b[2m", "\x1b[22m"
RED, UNRED = "\x1b[31m", "\x1b[39m"
TOOL_VALUE_CHARS = 80


def dim(text: str, color: bool) -> str:
    """`text` dimmed on a terminal, as is otherwise."""
    return f"{DIM}{text}{UNDIM}" if color and text else text


def compact(value: Any, limit: int = TOOL_VALUE_CHARS) -> str:
    """A JSON value on one line, cut to `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_line(
    name: str, tool_input: Any, output: Any = None, error: str | None = None, color: bool = False
) -> str:
    """One line for a tool call and its result (or error), without the newline."""
    arrow, mark = ("→", "⚙ ") if color else ("->", "tool ")
    head = f"{mark}{name}({compact(tool_input)})"
    if error is not None:
        return f"{head} {arrow} error: {compact(error)}"
    return f"{head} {arrow} {compact(output)}"


def status_text(data: dict[str, Any]) -> str | None:
    """A transient `data-status` as a short note (None for those not worth a line)."""
    status = data.get("status")
    if status == "retrying":
        delay = data.get("delay_s")
        wait = f" in {delay:.1f}s" if isinstance(delay, int | float) else ""
        return f"retrying{wait} ({data.get('code', 'error')}, attempt {data.get('attempt', '?')})"
    if status == "queued":
        return f"queued (position {data.get('position', '?')})"
    if status in ("steering", "steered", "cancelled"):
        return str(status)
    if status == "compacting":
        return "compacting the conversation"
    return str(status) if isinstance(status, str) else None


def error_text(error: dict[str, Any]) -> str:
    """A `data-error` payload as the line the user reads."""
    code, message = error.get("code", "error"), error.get("message", "")
    line = f"error ({code}): {message}"
    if error.get("retryable"):
        after = error.get("retry_after_s")
        line += f" (retryable{f' after {after}s' if after else ''}: /retry)"
    return line


def usage_line(metadata: dict[str, Any]) -> str | None:
    """`model · N in, M out tokens · $cost` from a turn's finish metadata."""
    usage = metadata.get("usage")
    if not isinstance(usage, dict):
        return None
    fed = sum(
        int(usage.get(k) or 0) for k in ("inputTokens", "cacheReadTokens", "cacheWriteTokens")
    )
    bits = [str(metadata["model"])] if metadata.get("model") else []
    bits.append(f"{fed} in, {int(usage.get('outputTokens') or 0)} out tokens")
    cost = metadata.get("costUsd")
    if isinstance(cost, int | float):
        bits.append(f"${cost:.4f}")
    return " · ".join(bits)


@dataclass
class TurnView:
    """The state of one turn on screen; `render` turns each chunk into writes."""

    color: bool
    turn_id: str | None = None
    texts: list[str] = field(default_factory=list)  # text shown, per text part
    error: dict[str, Any] | None = None
    finish_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    stop_requested: bool = False
    tools_shown: set[str] = field(default_factory=set)
    _part_index: dict[str, int] = field(default_factory=dict)
    _tool_inputs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    _line_open: bool = False  # stdout's last character is not a newline
    _last_block: str | None = None  # what stdout showed last: text, reasoning, tool, note

    @property
    def text(self) -> str:
        """The reply's text shown so far, parts joined by blank lines."""
        return "\n\n".join(self.texts)

    def render(self, chunk: dict[str, Any]) -> list[Write]:
        """The writes for one chunk."""
        kind = chunk.get("type")
        if not isinstance(kind, str):
            return []
        if kind == "start":
            meta = chunk.get("messageMetadata")
            if isinstance(meta, dict):
                self.turn_id = meta.get("turnId", self.turn_id)
            return []
        if kind == "text-start":
            writes = self._open("text")
            self._part_index[str(chunk.get("id"))] = len(self.texts)
            self.texts.append("")
            return writes
        if kind == "text-delta":
            return self._text(str(chunk.get("id")), str(chunk.get("delta", "")))
        if kind == "reasoning-start":
            return self._open("reasoning") if self.color else []
        if kind == "reasoning-delta":
            return self._out(dim(str(chunk.get("delta", "")), True)) if self.color else []
        if kind == "tool-input-available":
            call = str(chunk.get("toolCallId"))
            self._tool_inputs[call] = (str(chunk.get("toolName", "tool")), chunk.get("input"))
            return []
        if kind in ("tool-output-available", "tool-output-error"):
            call = str(chunk.get("toolCallId"))
            name, tool_input = self._tool_inputs.pop(call, ("tool", None))
            if kind == "tool-output-error":
                line = tool_line(
                    name, tool_input, error=str(chunk.get("errorText")), color=self.color
                )
            else:
                line = tool_line(name, tool_input, chunk.get("output"), color=self.color)
            self.tools_shown.add(call)
            return self._line(line, "tool")
        if kind == "data-status":
            note = status_text(chunk.get("data") or {})
            return self._line(f"[{note}]", "note") if note else []
        if kind == "data-steer":
            data = chunk.get("data") or {}
            return self._line(f"↳ steered in: {compact(data.get('text', ''))}", "note")
        if kind == "data-error":
            self.error = dict(chunk.get("data") or {})
            return self._error(error_text(self.error))
        if kind == "error" and self.error is None:
            self.error = {"code": "error", "message": str(chunk.get("errorText", ""))}
            return self._error(f"error: {self.error['message']}")
        if kind in ("message-metadata", "finish"):
            meta = chunk.get("messageMetadata")
            if isinstance(meta, dict):
                self.metadata.update(meta)
            if kind == "finish":
                return self.finish(chunk.get("finishReason"))
        return []

    def finish(self, reason: Any) -> list[Write]:
        """The end of the turn: calls that never got a result, `[stopped]`, the last newline."""
        if self.finished:
            return []
        self.finished = True
        self.finish_reason = reason if isinstance(reason, str) else None
        writes: list[Write] = []
        for name, tool_input in self._tool_inputs.values():
            writes += self._line(
                tool_line(name, tool_input, "(no result)", color=self.color), "tool"
            )
        self._tool_inputs.clear()
        if self.stop_requested and self.error is None:
            writes += self._line("[stopped]", "note")
        return writes + self.end_line()

    def end_line(self) -> list[Write]:
        """A newline if stdout's last line is open."""
        if not self._line_open:
            return []
        self._line_open = False
        return [("out", "\n")]

    def catch_up(self, message: dict[str, Any]) -> list[Write]:
        """The writes that complete this view from the stored reply (a stream that could not
        be resumed): text not shown yet, tool calls not shown yet, the error, the finish."""
        writes: list[Write] = []
        index = 0
        for part in message.get("parts") or []:
            kind = str(part.get("type", ""))
            if kind == "text":
                stored = str(part.get("text", ""))
                if index < len(self.texts):
                    shown = self.texts[index]
                    if stored.startswith(shown) and len(stored) > len(shown):
                        writes += self._append(index, stored[len(shown) :])
                else:
                    writes += self.render({"type": "text-start", "id": f"stored-{index}"})
                    writes += self.render(
                        {"type": "text-delta", "id": f"stored-{index}", "delta": stored}
                    )
                index += 1
            elif kind.startswith("tool-") and part.get("toolCallId") not in self.tools_shown:
                call = {"toolCallId": part.get("toolCallId"), "toolName": kind[5:]}
                writes += self.render(
                    {"type": "tool-input-available", **call, "input": part.get("input")}
                )
                if part.get("state") == "output-error":
                    writes += self.render(
                        {"type": "tool-output-error", **call, "errorText": part.get("errorText")}
                    )
                elif part.get("state") == "output-available":
                    writes += self.render(
                        {"type": "tool-output-available", **call, "output": part.get("output")}
                    )
            elif kind == "data-error" and self.error is None:
                writes += self.render({"type": "data-error", "data": part.get("data")})
        meta = message.get("metadata")
        if isinstance(meta, dict):
            self.metadata.update(meta)
        return writes + self.finish(self.metadata.get("finishReason"))

    def note(self, text: str) -> list[Write]:
        """A note of the client's own, as `[text]` on a line."""
        return self._line(f"[{text}]", "note")

    def _text(self, part_id: str, delta: str) -> list[Write]:
        index = self._part_index.get(part_id)
        if index is None:  # a delta without its start (a server bug): show it anyway
            writes = self.render({"type": "text-start", "id": part_id})
            return writes + self._text(part_id, delta)
        return self._append(index, delta)

    def _append(self, index: int, delta: str) -> list[Write]:
        self.texts[index] += delta
        return self._out(delta)

    def _open(self, block: str) -> list[Write]:
        """Start a text or reasoning part: a blank line between two texts, else a new line."""
        writes = self.end_line()
        if block == "text" and self._last_block == "text":
            writes.append(("out", "\n"))
        self._last_block = block
        return writes

    def _out(self, text: str) -> list[Write]:
        if not text:
            return []
        self._line_open = not text.endswith("\n")
        return [("out", text)]

    def _line(self, line: str, block: str) -> list[Write]:
        """A line of its own: dim on stdout on a terminal, on stderr when plain."""
        if not self.color:
            return [("err", line + "\n")]
        writes = self.end_line()
        self._last_block = block
        return [*writes, ("out", dim(line, True) + "\n")]

    def _error(self, line: str) -> list[Write]:
        text = f"{RED}{line}{UNRED}" if self.color else line
        return [*self.end_line(), ("err", text + "\n")]


def message_writes(message: dict[str, Any], color: bool) -> list[Write]:
    """A stored UIMessage of the history, as the terminal shows it."""
    if message.get("role") == "user":
        text = "\n".join(
            str(p.get("text", "")) for p in message.get("parts") or [] if p.get("type") == "text"
        )
        queued = " [queued]" if (message.get("metadata") or {}).get("status") == "queued" else ""
        return [("out", f"you> {text}{queued}\n")]
    view = TurnView(color=color)
    writes: list[Write] = []
    for part in message.get("parts") or []:
        if part.get("type") == "reasoning" and color:
            writes += view.render({"type": "reasoning-start", "id": "r"})
            writes += view.render(
                {"type": "reasoning-delta", "id": "r", "delta": part.get("text", "")}
            )
    reply = {
        **message,
        "parts": [p for p in message.get("parts") or [] if p.get("type") != "reasoning"],
    }
    return writes + view.catch_up(reply) + [("out", "\n")]
