"""Server-Sent Events framing of UI message chunks: `id:` is the chunk's sequence number."""

from __future__ import annotations

from typing import Any

import orjson

from app.stream.text import clean

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"

HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}


def frame(seq: int, chunk: dict[str, Any]) -> bytes:
    """One chunk as an SSE event.

    A chunk holding U+0000 or a lone surrogate is cleaned in place first (`app.stream.text`):
    the turn's stored reply is built from the same chunk, so it holds what the client got.
    """
    try:
        data = orjson.dumps(chunk)
    except orjson.JSONEncodeError:  # a lone surrogate (or something no cleaning fixes)
        data = orjson.dumps(clean(chunk))
    else:
        # Nearly every chunk is a text or reasoning delta: its string is searched, at about
        # 90 ns a chunk (searching the encoded bytes cost 130-500 ns; a token costs ~20 us of CPU
        # in all, bench/README.md).
        delta = chunk.get("delta")
        if ("\x00" in delta) if delta is not None else (data.find(b"\\u0000") >= 0):
            data = orjson.dumps(clean(chunk))
    return b"id: %d\ndata: %s\n\n" % (seq, data)


def frame_seq(raw: bytes) -> int | None:
    """The sequence number of an encoded frame (None for comments and `[DONE]`)."""
    if raw.startswith(b"id: "):
        return int(raw[4 : raw.index(b"\n")])
    return None


def split_frames(blob: bytes) -> list[bytes]:
    """Encoded frames joined together, split back into single frames."""
    return [part + b"\n\n" for part in blob.split(b"\n\n") if part]
