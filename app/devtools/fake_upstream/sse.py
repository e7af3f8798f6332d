"""Byte encoders for the Messages API event stream, and the renderer that paces a reply.

Hot-path events (deltas) are built from pre-encoded byte templates plus one `orjson.dumps` of
the delta string; only the few per-message events are built from dicts.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from app.devtools.fake_upstream.cache import InputUsage
from app.devtools.fake_upstream.reply import Block, Reply, message_json, usage_fields

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_DELTA_FIELD = {
    "text": b',"delta":{"type":"text_delta","text":',
    "thinking": b',"delta":{"type":"thinking_delta","thinking":',
    "tool_use": b',"delta":{"type":"input_json_delta","partial_json":',
}
_STOP_HEAD = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'


def event(name: str, data: dict[str, Any]) -> bytes:
    """Encode one SSE event whose data is `data` as JSON."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def delta(index: int, block_type: str, text: str) -> bytes:
    """Encode a content_block_delta carrying `text` for a block of `block_type`."""
    return (
        _DELTA_HEAD
        + str(index).encode()
        + _DELTA_FIELD[block_type]
        + _json_string(text)
        + b"}}\n\n"
    )


def _json_string(text: str) -> bytes:
    """`text` as JSON; a lone surrogate (scripted by a test) escaped as `\\udXXX`."""
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        return json.dumps(text).encode()


def block_start(index: int, block: Block) -> bytes:
    """Encode the content_block_start of `block`."""
    content: dict[str, Any]
    if block.type == "text":
        content = {"type": "text", "text": ""}
    elif block.type == "thinking":
        content = {"type": "thinking", "thinking": "", "signature": ""}
    else:
        content = {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": {}}
    return event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": content},
    )


def block_stop(index: int) -> bytes:
    """Encode a content_block_stop."""
    return _STOP_HEAD + str(index).encode() + b"}\n\n"


def signature_delta(index: int, signature: str) -> bytes:
    """Encode the signature_delta that ends a thinking block."""
    return event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "signature_delta", "signature": signature},
        },
    )


def message_start(model: str, reply: Reply, usage: InputUsage) -> list[bytes]:
    """Encode the message_start (with the input usage) and the ping that follows it."""
    # Like the real API, message_start counts at most one output token; message_delta has all.
    message = message_json(model, None, usage, min(1, reply.output_tokens))
    return [event("message_start", {"type": "message_start", "message": message}), PING]


def message_end(reply: Reply, usage: InputUsage) -> list[bytes]:
    """Encode the message_delta (stop reason, final usage) and message_stop."""
    data = {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": usage_fields(usage, reply.output_tokens),
    }
    return [event("message_delta", data), MESSAGE_STOP]


class StreamRenderer:
    """Turns a reply into content-block events, a given number of token pieces at a time."""

    def __init__(self, reply: Reply, max_pieces_per_delta: int) -> None:
        self._blocks = reply.blocks
        self._max = max(1, max_pieces_per_delta)
        self._block = 0
        self._piece = 0
        self._open = False
        self.emitted = 0

    @property
    def done(self) -> bool:
        """Whether every block has been opened, filled and closed."""
        return self._block >= len(self._blocks)

    def render(self, budget: int) -> list[bytes]:
        """Emit up to `budget` more pieces (and any block starts/stops they reach)."""
        out: list[bytes] = []
        while not self.done:
            block = self._blocks[self._block]
            if not self._open:
                if budget <= 0 and block.pieces:
                    break
                out.append(block_start(self._block, block))
                self._open = True
            while budget > 0 and self._piece < len(block.pieces):
                take = min(budget, self._max, len(block.pieces) - self._piece)
                chunk = "".join(block.pieces[self._piece : self._piece + take])
                out.append(delta(self._block, block.type, chunk))
                self._piece += take
                self.emitted += take
                budget -= take
            if self._piece < len(block.pieces):
                break
            if block.type == "thinking":
                out.append(signature_delta(self._block, block.signature))
            out.append(block_stop(self._block))
            self._block += 1
            self._piece = 0
            self._open = False
        return out
