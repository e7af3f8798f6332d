"""The Messages API event-stream decoder: framing, pings, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.backends.anthropic_sse import sse_events
from app.backends.errors import UpstreamError


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _decode(*parts: bytes) -> list[dict[str, Any]]:
    return [event async for event in sse_events(_chunks(*parts))]


STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"a\\n\\nb"}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


async def test_events_come_whole_however_the_bytes_are_split() -> None:
    whole = await _decode(STREAM)
    assert [e["type"] for e in whole] == ["message_start", "content_block_delta", "message_stop"]
    assert whole[1]["delta"]["text"] == "a\n\nb"
    byte_by_byte = await _decode(*(STREAM[i : i + 1] for i in range(len(STREAM))))
    assert byte_by_byte == whole


async def test_crlf_line_ends_split_between_chunks_are_understood() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    cut = crlf.index(b"\r\n\r\n") + 1  # between a \r and its \n
    assert await _decode(crlf[:cut], crlf[cut:]) == await _decode(STREAM)


async def test_data_split_over_several_lines_and_comments_are_joined_and_skipped() -> None:
    events = await _decode(b': keep-alive\n\ndata: {"type":\ndata: "message_stop"}\n\n')
    assert events == [{"type": "message_stop"}]


@pytest.mark.parametrize(
    ("error_type", "message", "code"),
    [
        ("overloaded_error", "Overloaded", "overloaded"),
        ("rate_limit_error", "slow down", "rate_limited"),
        ("invalid_request_error", "prompt is too long: 300000 tokens", "prompt_too_long"),
        ("something_new", "?", "upstream_unavailable"),
    ],
)
async def test_an_error_event_raises_its_code(error_type: str, message: str, code: str) -> None:
    body = f'{{"type":"error","error":{{"type":"{error_type}","message":"{message}"}}}}'
    with pytest.raises(UpstreamError) as caught:
        await _decode(
            STREAM[: STREAM.index(b"\n\n") + 2], b"event: error\ndata: " + body.encode() + b"\n\n"
        )
    assert caught.value.code == code
    assert caught.value.detail == message


async def test_an_event_that_is_not_json_is_an_upstream_failure() -> None:
    with pytest.raises(UpstreamError) as caught:
        await _decode(b"event: message_start\ndata: {not json\n\n")
    assert caught.value.code == "upstream_unavailable"


async def test_an_event_escaping_a_lone_surrogate_is_decoded_not_refused() -> None:
    # Valid JSON that orjson refuses; the chunk encoder turns the surrogate into U+FFFD.
    events = await _decode(b'data: {"type":"content_block_delta","text":"a\\ud800b"}\n\n')
    assert events[0]["text"] == "a\ud800b"
