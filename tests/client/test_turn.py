"""Following a turn: resuming after a drop, the stored reply after a 204, giving up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.client.api import CopilotAPI
from app.client.render import TurnView, Write
from app.client.turn import ConnectionLost, TurnFollower

SESSION = "s1"


def frames(chunks: list[dict[str, Any]], first_id: int = 0) -> list[bytes]:
    return [
        b"id: %d\ndata: %s\n\n" % (first_id + i, json.dumps(c).encode())
        for i, c in enumerate(chunks)
    ]


CHUNKS: list[dict[str, Any]] = [
    {"type": "start", "messageId": "m1", "messageMetadata": {"turnId": "t1"}},
    {"type": "start-step"},
    {"type": "text-start", "id": "p"},
    *({"type": "text-delta", "id": "p", "delta": w} for w in ["one ", "two ", "three ", "four"]),
    {"type": "text-end", "id": "p"},
    {"type": "finish-step"},
    {"type": "finish", "finishReason": "stop", "messageMetadata": {"turnId": "t1"}},
]
ALL = frames(CHUNKS) + [b"data: [DONE]\n\n"]


class Breaking(httpx.SyncByteStream):
    """A body that sends some bytes and then breaks like a dropped connection."""

    def __init__(self, parts: list[bytes], error: bool = True) -> None:
        self.parts, self.error = parts, error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts
        if self.error:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


class Server:
    """Answers the follower's requests from a script; records what it was asked."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.history: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/messages"):
            return httpx.Response(200, json={"messages": self.history, "has_more": False})
        if request.url.path.endswith("/stop"):
            return httpx.Response(202)
        return self.answers.pop(0)


def follow(server: Server, posted: bool = True) -> tuple[str, TurnFollower, list[float]]:
    """Follow a turn whose stream is the server's first answer (`posted`) or a resume."""
    api = CopilotAPI("http://copilot.test", transport=httpx.MockTransport(server))
    shown: list[Write] = []
    slept: list[float] = []
    follower = TurnFollower(
        api, SESSION, TurnView(color=False), shown.extend, backoff=(0.1, 0.2), sleep=slept.append
    )
    first = None
    if posted:
        first = api.http.send(api.http.build_request("POST", "/chat"), stream=True)
    follower.run(first)
    return "".join(t for c, t in shown if c == "out"), follower, slept


def test_a_dropped_stream_resumes_after_the_last_id_and_shows_the_reply_once() -> None:
    server = Server(
        httpx.Response(200, stream=Breaking(ALL[:5])),
        httpx.Response(200, stream=Breaking(ALL[5:], error=False)),
    )
    out, follower, slept = follow(server)
    assert out == "one two three four\n"
    resumed = server.requests[1]
    assert resumed.url.path == f"/api/v1/chat/{SESSION}/stream"
    assert resumed.headers["last-event-id"] == "4"
    assert follower.view.finish_reason == "stop"
    assert slept == [0.1]


def test_frames_replayed_twice_are_shown_once() -> None:
    server = Server(
        httpx.Response(200, stream=Breaking(ALL[:5])),
        httpx.Response(200, stream=Breaking(ALL[2:], error=False)),  # replays ids 2..4 again
    )
    out, _, _ = follow(server)
    assert out == "one two three four\n"


def test_a_body_that_ends_before_done_is_a_drop_too() -> None:
    server = Server(
        httpx.Response(200, stream=Breaking(ALL[:4], error=False)),
        httpx.Response(200, stream=Breaking(ALL[4:], error=False)),
    )
    out, _, _ = follow(server)
    assert out == "one two three four\n"
    assert server.requests[1].headers["last-event-id"] == "3"


def test_no_turn_any_more_shows_the_rest_from_the_stored_reply() -> None:
    server = Server(httpx.Response(200, stream=Breaking(ALL[:5])), httpx.Response(204))
    server.history = [
        {"id": "u", "role": "user", "parts": [{"type": "text", "text": "q"}], "metadata": {}},
        {
            "id": "m1",
            "role": "assistant",
            "parts": [{"type": "text", "text": "one two three four"}],
            "metadata": {"turnId": "t1", "finishReason": "stop"},
        },
    ]
    out, follower, _ = follow(server)
    assert out == "one two three four\n"
    assert follower.view.finished
    assert follower.view.finish_reason == "stop"


def test_resuming_gives_up_after_the_backoff_with_connection_lost() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, stream=Breaking(ALL[:5]))

    api = CopilotAPI("http://copilot.test", transport=httpx.MockTransport(refuse))
    slept: list[float] = []
    follower = TurnFollower(
        api, SESSION, TurnView(color=False), lambda w: None, backoff=(0.1, 0.2), sleep=slept.append
    )
    first = api.http.send(api.http.build_request("POST", "/chat"), stream=True)
    with pytest.raises(ConnectionLost, match="connection refused"):
        follower.run(first)
    assert slept == [0.1, 0.2]


def test_following_a_running_turn_starts_with_a_resume_without_last_event_id() -> None:
    server = Server(httpx.Response(200, stream=Breaking(ALL, error=False)))
    out, _, _ = follow(server, posted=False)
    assert out == "one two three four\n"
    assert "last-event-id" not in server.requests[0].headers


def test_a_stop_request_is_sent_and_the_stream_read_to_its_end() -> None:
    server = Server(httpx.Response(200, stream=Breaking(ALL, error=False)))
    api = CopilotAPI("http://copilot.test", transport=httpx.MockTransport(server))
    shown: list[Write] = []
    follower = TurnFollower(api, SESSION, TurnView(color=False), shown.extend)
    follower.request_stop()
    follower.run(None)
    assert any(r.url.path == f"/api/v1/chat/{SESSION}/stop" for r in server.requests)
    err = "".join(t for c, t in shown if c == "err")
    assert "[stopping: Ctrl-C again to quit]" in err
    assert err.endswith("[stopped]\n")
