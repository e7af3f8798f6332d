"""SSE framing of UI message chunks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.stream.sse import frame


def _data(raw: bytes) -> Any:
    return orjson.loads(raw.split(b"\ndata: ", 1)[1])


@pytest.mark.parametrize(
    "chunk",
    [
        {"type": "text-delta", "id": "t", "delta": "a\x00b"},
        {"type": "text-delta", "id": "t", "delta": "a\ud800b"},
        {"type": "tool-output-available", "toolCallId": "c", "output": {"x": ["a\x00b"]}},
        {"type": "data-error", "id": "error", "data": {"message": "a\ud800b"}},
    ],
)
def test_a_chunk_with_nul_or_a_lone_surrogate_is_sent_and_kept_with_u_fffd(
    chunk: dict[str, Any],
) -> None:
    raw = frame(7, chunk)
    assert raw.startswith(b"id: 7\ndata: ")
    assert b"\\u0000" not in raw
    # The chunk itself is cleaned too: the stored reply is built from it.
    assert _data(raw) == chunk
    assert "a\ufffdb" in orjson.dumps(chunk).decode()


def test_an_escaped_backslash_u_0000_is_text_not_a_nul() -> None:
    chunk = {"type": "text-start", "id": "\\u0000"}
    assert _data(frame(0, chunk)) == {"type": "text-start", "id": "\\u0000"}
