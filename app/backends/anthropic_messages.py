"""Stored UIMessages -> Anthropic `messages`, in the strict user/assistant alternation it needs.

A reply made of several steps becomes several assistant messages, each followed by a user
message carrying its tool results, and the text of any message that joined the turn there (a
`data-steer` part: `on_conflict: "steer"`). Reasoning and data parts of earlier turns are left
out (the API allows dropping earlier thinking); a tool call that never got a result is dropped
too, so an interrupted turn cannot make the history invalid.

Images go to the model in full from the current (last) user message, and from an earlier one
only if the reply to it shows the model accepted them (it holds text, reasoning or a tool
call); any other earlier image becomes a one-line mention (`[image photo.png was attached
earlier]`). So an image the model refuses (a 400) fails the turn that sent it and never the
next ones, while images the model has read stay in the history it can look at again, and the
prompt cache keeps the same prefix from turn to turn.
"""

from __future__ import annotations

from typing import Any

import orjson

Message = dict[str, Any]
Block = dict[str, Any]


def _tool_name(part: dict[str, Any]) -> str | None:
    kind = str(part.get("type", ""))
    if kind == "dynamic-tool":
        return str(part.get("toolName", "")) or None
    if kind.startswith("tool-"):
        return kind[5:]
    return None


def _result_content(output: Any) -> str:
    return output if isinstance(output, str) else orjson.dumps(output, default=str).decode()


def _user_blocks(parts: list[dict[str, Any]], *, send_files: bool) -> list[Block]:
    blocks: list[Block] = []
    for part in parts:
        if part.get("type") == "text" and str(part.get("text", "")).strip():
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "file":
            url, media = str(part.get("url", "")), str(part.get("mediaType", ""))
            name = part.get("filename") or ("" if url.startswith("data:") else url[:80])
            image = media.startswith("image/") and url.startswith("data:") and ";base64," in url
            if image and send_files:
                data = url.split(";base64,", 1)[1]
                blocks.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            elif image:
                label = f"image {name}" if name else f"an image ({media})"
                blocks.append({"type": "text", "text": f"[{label} was attached earlier]"})
            else:
                blocks.append({"type": "text", "text": f"[attached file: {name} ({media})]"})
    return blocks


def _model_answered(reply_parts: list[dict[str, Any]]) -> bool:
    """Whether a reply holds something the model produced (so its request was accepted)."""
    for part in reply_parts:
        kind = part.get("type")
        if kind in ("text", "reasoning") and str(part.get("text", "")).strip():
            return True
        if _tool_name(part) is not None:
            return True
    return False


def _accepted(history: list[dict[str, Any]], index: int) -> bool:
    """Whether a reply to the user message at `index` (before the next user message) shows
    that the model accepted the request that carried its files in full."""
    for ui in history[index + 1 :]:
        if ui.get("role") == "user":
            return False
        if ui.get("role") == "assistant" and _model_answered(
            [p for p in ui.get("parts", []) if isinstance(p, dict)]
        ):
            return True
    return False


def _assistant_messages(parts: list[dict[str, Any]]) -> list[Message]:
    messages: list[Message] = []
    content: list[Block] = []
    results: list[Block] = []
    steering: list[Block] = []  # messages that joined the turn after this step's results

    def close_step() -> None:
        nonlocal content, results, steering
        if content:
            messages.append({"role": "assistant", "content": content})
        if (content and results) or steering:
            messages.append({"role": "user", "content": [*(results if content else []), *steering]})
        content, results, steering = [], [], []

    for part in parts:
        kind = part.get("type")
        if kind == "step-start":
            close_step()
        elif kind == "data-steer":
            text = str((part.get("data") or {}).get("text", ""))
            if text.strip():
                steering.append({"type": "text", "text": text})
        elif kind == "text" and str(part.get("text", "")).strip():
            content.append({"type": "text", "text": part["text"]})
        elif (name := _tool_name(part)) is not None:
            state = part.get("state")
            if state not in ("output-available", "output-error"):
                continue
            call_id = str(part.get("toolCallId"))
            content.append(
                {"type": "tool_use", "id": call_id, "name": name, "input": part.get("input") or {}}
            )
            if state == "output-available":
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": call_id,
                        "content": _result_content(part.get("output")),
                    }
                )
            else:
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": call_id,
                        "is_error": True,
                        "content": str(part.get("errorText") or "tool failed"),
                    }
                )
    close_step()
    return messages


def _merge(messages: list[Message]) -> list[Message]:
    merged: list[Message] = []
    for message in messages:
        if not message["content"]:
            continue
        if merged and merged[-1]["role"] == message["role"]:
            previous = merged[-1]["content"]
            # tool_result blocks must lead a user message: keep them before any text.
            if message["role"] == "user" and any(
                b["type"] == "tool_result" for b in message["content"]
            ):
                merged[-1]["content"] = [*message["content"], *previous]
            else:
                merged[-1]["content"] = [*previous, *message["content"]]
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    while merged and merged[0]["role"] != "user":
        merged.pop(0)
    return merged


def to_anthropic(history: list[dict[str, Any]]) -> list[Message]:
    """The conversation as Anthropic messages, alternating and starting with the user."""
    users = [i for i, ui in enumerate(history) if ui.get("role") == "user"]
    current = users[-1] if users else -1
    messages: list[Message] = []
    for index, ui in enumerate(history):
        parts = [p for p in ui.get("parts", []) if isinstance(p, dict)]
        if ui.get("role") == "user":
            send_files = index == current or _accepted(history, index)
            messages.append({"role": "user", "content": _user_blocks(parts, send_files=send_files)})
        elif ui.get("role") == "assistant":
            messages.extend(_assistant_messages(parts))
    return _merge(messages)
