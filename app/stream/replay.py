"""A stored UIMessage turned back into UI message chunks, for a resume whose EventLog is gone."""

from __future__ import annotations

from typing import Any

import orjson

from app.stream.chunks import error as error_chunk


def _tool_chunks(part: dict[str, Any]) -> list[dict[str, Any]]:
    kind = str(part["type"])
    name = str(part.get("toolName")) if kind == "dynamic-tool" else kind.removeprefix("tool-")
    call = {"toolCallId": part.get("toolCallId", ""), "providerExecuted": True}
    out: list[dict[str, Any]] = [{"type": "tool-input-start", **call, "toolName": name}]
    state = part.get("state")
    if state in ("input-available", "output-available", "output-error"):
        out.append(
            {
                "type": "tool-input-available",
                **call,
                "toolName": name,
                "input": part.get("input", {}),
            }
        )
    if state == "output-available":
        out.append({"type": "tool-output-available", **call, "output": part.get("output")})
    elif state == "output-error":
        out.append(
            {
                "type": "tool-output-error",
                **call,
                "errorText": str(part.get("errorText", "tool failed")),
            }
        )
    return out


def message_chunks(message_id: str, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chunks that rebuild `parts` under `message_id` (without `finish`); a stored
    `data-error` is followed, once the step is closed, by the protocol's `error`, as it was
    when the turn failed."""
    chunks: list[dict[str, Any]] = [{"type": "start", "messageId": message_id}]
    in_step = False
    failed: dict[str, Any] | None = None

    def open_step() -> None:
        nonlocal in_step
        if not in_step:
            chunks.append({"type": "start-step"})
            in_step = True

    for index, part in enumerate(parts):
        kind = str(part.get("type", ""))
        if kind == "step-start":
            if in_step:
                chunks.append({"type": "finish-step"})
                in_step = False
            open_step()
        elif kind in ("text", "reasoning"):
            open_step()
            part_id = f"replay-{index}"
            chunks.append({"type": f"{kind}-start", "id": part_id})
            if part.get("text"):
                chunks.append({"type": f"{kind}-delta", "id": part_id, "delta": part["text"]})
            end: dict[str, Any] = {"type": f"{kind}-end", "id": part_id}
            if "providerMetadata" in part:
                end["providerMetadata"] = part["providerMetadata"]
            chunks.append(end)
        elif kind.startswith("tool-") or kind == "dynamic-tool":
            open_step()
            chunks.extend(_tool_chunks(part))
        elif kind.startswith("data-"):
            chunk: dict[str, Any] = {"type": kind, "data": part.get("data")}
            if part.get("id") is not None:
                chunk["id"] = part["id"]
            chunks.append(chunk)
            if kind == "data-error":  # the live stream said it twice (`chunks.failure`)
                error = part.get("data") or {}
                failed = error_chunk(f"{error.get('code')}: {error.get('message')}")
    if in_step:
        chunks.append({"type": "finish-step"})
    if failed is not None:
        chunks.append(failed)
    return chunks


def frame_chunks(frames: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """The sequence numbers and chunks of encoded frames (comments and `[DONE]` skipped)."""
    out = []
    for raw in frames:
        if raw.startswith(b"id: "):
            head, _, data = raw.partition(b"\ndata: ")
            out.append((int(head[4:]), orjson.loads(data)))
    return out


def closing_chunks(frames: list[bytes]) -> tuple[int, list[dict[str, Any]]]:
    """The last sequence number of a stream cut short (its encoded frames, in order), and
    the chunks that close what it left open: text and reasoning parts, then the step."""
    sent = frame_chunks(frames)
    last_seq = sent[-1][0] if sent else -1
    open_parts: dict[str, str] = {}
    step_open = False
    for _, chunk in sent:
        kind = chunk.get("type", "")
        if kind in ("text-start", "reasoning-start"):
            open_parts[chunk["id"]] = kind[:-6]
        elif kind in ("text-end", "reasoning-end"):
            open_parts.pop(chunk["id"], None)
        elif kind == "start-step":
            step_open = True
        elif kind == "finish-step":
            step_open = False
    closing: list[dict[str, Any]] = [
        {"type": f"{kind}-end", "id": part_id} for part_id, kind in open_parts.items()
    ]
    if step_open:
        closing.append({"type": "finish-step"})
    return last_seq, closing
