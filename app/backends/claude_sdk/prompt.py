"""The user message a turn sends to the CLI, built from the stored UIMessages.

Only the last message of `TurnRequest.history` is new: the CLI has the rest in its transcript.
Its text parts become text blocks; `file` parts with an image media type become image blocks
(a `data:` URL as base64, another URL by reference), as on the Messages API backend; other
files are written into the session's workspace (`uploads/`) and named in the prompt, so the
CLI's file tools can read them.

When the CLI starts without its transcript (none stored, or unreadable) while the session has
history, the first prompt carries a compact text rendering of that history (`seed_text`),
newest last and cut from the oldest end at `SEED_MAX_CHARS`: the model knows what was said, if
not every tool call's bytes. On the context ladder's rungs 2 and 3 the history is the context
the runner made fit (a summary first, or the newest messages): it is seeded whole.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from pathlib import Path
from typing import Any

import orjson

SEED_MAX_CHARS = 60_000
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _data_url(url: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of a base64 `data:` URL, else None."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, _, payload = url.partition(";base64,")
    try:
        return head.removeprefix("data:"), base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def _save(workspace: Path, name: str, data: bytes) -> str:
    """Write an upload into the workspace; its path relative to the workspace."""
    uploads = workspace / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    safe = _SAFE_NAME.sub("_", Path(name).name).strip("._") or "file"
    target = uploads / safe
    if target.exists():
        target = uploads / f"{uuid.uuid4().hex[:8]}-{safe}"
    target.write_bytes(data)
    return str(target.relative_to(workspace))


def user_content(message: dict[str, Any], workspace: Path) -> list[dict[str, Any]]:
    """The content blocks of a user UIMessage (files saved into `workspace`)."""
    blocks: list[dict[str, Any]] = []
    notes: list[str] = []
    for part in message.get("parts") or []:
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "file":
            media = str(part.get("mediaType") or "application/octet-stream")
            url = str(part.get("url") or "")
            decoded = _data_url(url)
            if media.startswith("image/"):
                source: dict[str, Any] = (
                    {"type": "base64", "media_type": media, "data": url.partition(",")[2]}
                    if decoded
                    else {"type": "url", "url": url}
                )
                blocks.append({"type": "image", "source": source})
            elif decoded is not None:
                path = _save(workspace, str(part.get("filename") or "file"), decoded[1])
                notes.append(f"[The user attached a file: {path} ({media})]")
            else:
                notes.append(f"[The user attached a file: {url} ({media})]")
    if notes:
        blocks.append({"type": "text", "text": "\n".join(notes)})
    if not blocks:
        blocks.append({"type": "text", "text": "(empty message)"})
    return blocks


def _render(message: dict[str, Any]) -> str:
    role = "User" if message.get("role") == "user" else "Assistant"
    lines: list[str] = []
    for part in message.get("parts") or []:
        kind = str(part.get("type") or "")
        if kind == "text" and part.get("text"):
            lines.append(part["text"])
        elif kind.startswith("tool-"):
            args = orjson.dumps(part.get("input"), default=str).decode()
            result = part.get("errorText") or part.get("output")
            shown = result if isinstance(result, str) else orjson.dumps(result, default=str)
            lines.append(f"[tool {kind[5:]}({args[:500]}) -> {str(shown)[:500]}]")
        elif kind == "file":
            lines.append(f"[file {part.get('filename') or part.get('mediaType')}]")
    return f"{role}: " + "\n".join(lines) if lines else ""


def seed_text(history: list[dict[str, Any]], *, shortened: bool = False) -> str:
    """The earlier conversation as text for a CLI that starts without its transcript;
    `shortened`: a context the ladder already made fit (rungs 2 and 3), kept whole."""
    rendered: list[str] = []
    size = 0
    for message in reversed(history):
        text = _render(message)
        if not text:
            continue
        if not shortened and size + len(text) > SEED_MAX_CHARS:
            rendered.append("[... earlier messages omitted ...]")
            break
        rendered.append(text)
        size += len(text)
    body = "\n\n".join(reversed(rendered))
    why = (
        "shortened to fit your context window"
        if shortened
        else "restored from the record (your earlier session could not be resumed)"
    )
    return (
        f"<earlier_conversation>\nThe conversation so far, {why}:\n\n{body}\n"
        "</earlier_conversation>"
    )


def user_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream-json user message the CLI reads from its stdin."""
    return {
        "type": "user",
        "message": {"role": "user", "content": blocks},
        "parent_tool_use_id": None,
        "uuid": str(uuid.uuid4()),
    }
