"""Server-Sent Events framing of UI message chunks: `id:` is the chunk's sequence number."""

from __future__ import annotations

from typing import Any

import orjson

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"

HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}


def frame(seq: int, chunk: dict[str, Any]) -> bytes:
    """One chunk as an SSE event."""
    return b"id: %d\ndata: %s\n\n" % (seq, orjson.dumps(chunk))


def frame_seq(raw: bytes) -> int | None:
    """The sequence number of an encoded frame (None for comments and `[DONE]`)."""
    if raw.startswith(b"id: "):
        return int(raw[4 : raw.index(b"\n")])
    return None


def split_frames(blob: bytes) -> list[bytes]:
    """Encoded frames joined together, split back into single frames."""
    return [part + b"\n\n" for part in blob.split(b"\n\n") if part]
