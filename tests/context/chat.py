"""What the served ladder tests share: a turn over HTTP, the stored context markers, and a
long conversation with tool calls."""

from __future__ import annotations

from typing import Any

import httpx

from tests.serving import StreamResult, assert_well_formed, stream


def say(http: httpx.Client, sid: str, message: str) -> StreamResult:
    """One turn; its stream must be well formed."""
    result = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": message})
    assert_well_formed(result)
    return result


def markers(http: httpx.Client, sid: str) -> list[dict[str, Any]]:
    """The `data-context` parts stored with the session's replies, oldest first."""
    messages = http.get(f"/api/v1/sessions/{sid}/messages", params={"limit": 500}).json()
    return [
        part["data"]
        for message in messages["messages"]
        for part in message["parts"]
        if part["type"] == "data-context"
    ]


def long_conversation(http: httpx.Client, sid: str, turns: int, filler: int) -> None:
    """`turns` turns, every tenth a tool call, each answered without an error."""
    for i in range(turns):
        if i % 10 == 0:
            message = '[[fake:tool name=calculate input={"expression": "6*7"}]]'
        else:
            message = f"turn {i}: " + "more words that fill the window " * filler
        result = say(http, sid, message)
        assert result.error is None, (i, result.error)
