"""Builds the assistant `UIMessage` parts from the chunks a turn sends, as the AI SDK client does.

What is stored is what the user saw: text and reasoning as streamed, tool calls with their
inputs and outputs, step boundaries, and a `data-error` if the turn failed. Transient data
parts are not stored.
"""

from __future__ import annotations

from typing import Any


class ReplyAssembler:
    """Applies chunks to a list of parts; `parts()` renders them for storage."""

    def __init__(self) -> None:
        self._parts: list[dict[str, Any]] = []
        self._texts: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._tools: dict[str, dict[str, Any]] = {}
        self._tool_json: dict[str, list[str]] = {}
        self.dirty = False

    def apply(self, chunk: dict[str, Any]) -> None:
        """Fold one chunk into the message."""
        kind = chunk["type"]
        self.dirty = True
        if kind in ("text-delta", "reasoning-delta"):
            entry = self._texts.get(chunk["id"])
            if entry is not None:
                entry[1].append(chunk["delta"])
        elif kind in ("text-start", "reasoning-start"):
            part: dict[str, Any] = {"type": kind[:-6], "text": "", "state": "streaming"}
            self._texts[chunk["id"]] = (part, [])
            self._parts.append(part)
        elif kind in ("text-end", "reasoning-end"):
            entry = self._texts.get(chunk["id"])
            if entry is not None:
                entry[0]["state"] = "done"
                if "providerMetadata" in chunk:
                    entry[0]["providerMetadata"] = chunk["providerMetadata"]
        elif kind == "start-step":
            self._parts.append({"type": "step-start"})
        elif kind == "tool-input-start":
            tool: dict[str, Any] = {
                "type": f"tool-{chunk['toolName']}",
                "toolCallId": chunk["toolCallId"],
                "state": "input-streaming",
                "providerExecuted": True,
            }
            self._tools[chunk["toolCallId"]] = tool
            self._tool_json[chunk["toolCallId"]] = []
            self._parts.append(tool)
        elif kind == "tool-input-delta":
            self._tool_json.get(chunk["toolCallId"], []).append(chunk["inputTextDelta"])
        elif kind == "tool-input-available":
            tool = self._tools[chunk["toolCallId"]]
            tool.update(state="input-available", input=chunk["input"])
            tool.pop("inputText", None)  # partial JSON a flush may have stored: superseded
            self._tool_json.get(chunk["toolCallId"], []).clear()
        elif kind == "tool-output-available":
            self._tools[chunk["toolCallId"]].update(
                state="output-available", output=chunk["output"]
            )
        elif kind == "tool-output-error":
            self._tools[chunk["toolCallId"]].update(
                state="output-error", errorText=chunk["errorText"]
            )
        elif kind.startswith("data-") and not chunk.get("transient"):
            part = {"type": kind, "data": chunk["data"]}
            if chunk.get("id") is not None:
                part["id"] = chunk["id"]  # optional, never null: the AI SDK rejects null
            self._parts.append(part)

    def parts(self) -> list[dict[str, Any]]:
        """The parts as they stand, with streamed text joined."""
        for part, pieces in self._texts.values():
            if pieces:
                part["text"] += "".join(pieces)
                pieces.clear()
        for call_id, pieces in self._tool_json.items():
            tool = self._tools[call_id]
            if tool["state"] == "input-streaming" and pieces:
                tool["inputText"] = tool.get("inputText", "") + "".join(pieces)
                pieces.clear()
        self.dirty = False
        return [dict(part) for part in self._parts]
