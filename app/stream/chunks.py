"""Builders of AI SDK UI message stream chunks (protocol v1), accepted by `ai` 5, 6 and 7.

Optional fields are left out rather than set to null: the AI SDK's schemas reject null.
"""

from __future__ import annotations

from typing import Any


def start(message_id: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The first chunk: names the assistant message."""
    chunk: dict[str, Any] = {"type": "start", "messageId": message_id}
    if metadata:
        chunk["messageMetadata"] = metadata
    return chunk


def finish(reason: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The last chunk of every turn."""
    chunk: dict[str, Any] = {"type": "finish", "finishReason": reason}
    if metadata:
        chunk["messageMetadata"] = metadata
    return chunk


def message_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata of the assistant message (usage, cost) outside `finish`."""
    return {"type": "message-metadata", "messageMetadata": metadata}


def data_status(status: str, **data: Any) -> dict[str, Any]:
    """A transient progress notice (retrying, compacting, queued): never stored."""
    return {"type": "data-status", "data": {"status": status, **data}, "transient": True}


def data_error(
    code: str, message: str, retryable: bool, retry_after_s: float | None = None
) -> dict[str, Any]:
    """A structured error the client can act on; stored with the message."""
    data: dict[str, Any] = {"code": code, "message": message, "retryable": retryable}
    if retry_after_s is not None:
        data["retry_after_s"] = round(retry_after_s, 3)
    return {"type": "data-error", "id": "error", "data": data}


def failure(code: str, message: str, retryable: bool) -> list[dict[str, Any]]:
    """How a turn that failed says so: `data-error` (stored with the reply), then the
    protocol's `error` (where the AI SDK stops); `finish` comes after them."""
    return [data_error(code, message, retryable), error(f"{code}: {message}")]


def data_steer(message_id: str, text: str) -> dict[str, Any]:
    """A message the user sent while the turn ran, taken in at this point of the reply (before
    the model's next call); stored with the reply, in place."""
    return {"type": "data-steer", "id": message_id, "data": {"messageId": message_id, "text": text}}


def data_context(change: Any) -> dict[str, Any]:
    """A marker, stored with the reply, that the model's context was made smaller
    (`events.ContextChange`): the UI can show "earlier messages were summarised"."""
    data: dict[str, Any] = {"method": change.method, "trigger": change.trigger}
    if change.tokens_before is not None:
        data["tokensBefore"] = change.tokens_before
    if change.tokens_after is not None:
        data["tokensAfter"] = change.tokens_after
    return {"type": "data-context", "data": data}


def error(text: str) -> dict[str, Any]:
    """The protocol's error chunk (the AI SDK surfaces it as the chat's error)."""
    return {"type": "error", "errorText": text}
