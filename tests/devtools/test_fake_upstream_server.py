"""The fake upstream over raw HTTP: wire format, headers, admin endpoints, lifecycle."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle, fake_upstream_task


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in raw.strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        assert name_line.startswith("event: ")
        assert data_line.startswith("data: ")
        data = orjson.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        out.append((name_line[len("event: ") :], data))
    return out


def test_stream_wire_format_and_headers(fake: FakeUpstreamHandle) -> None:
    response = httpx.post(
        f"{fake.base_url}/v1/messages?beta=true", json=_body("[[fake:text tokens=3]]", stream=True)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["anthropic-ratelimit-requests-limit"].isdigit()
    events = _events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert set(start["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    delta = events[5][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3


def test_errors_have_anthropic_shape_and_retry_headers(fake: FakeUpstreamHandle) -> None:
    response = httpx.post(f"{fake.base_url}/v1/messages", json=_body("[[fake:error status=529]]"))
    assert response.status_code == 529
    body = response.json()
    assert body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": response.headers["request-id"],
    }
    assert response.headers["x-should-retry"] == "true"
    bad = httpx.post(f"{fake.base_url}/v1/messages", json=_body("[[fake:error status=400]]"))
    assert bad.headers["x-should-retry"] == "false"


def test_missing_max_tokens_and_unknown_paths_are_anthropic_errors(
    fake: FakeUpstreamHandle,
) -> None:
    body = _body("hi")
    del body["max_tokens"]
    response = httpx.post(f"{fake.base_url}/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "max_tokens: Field required"
    missing = httpx.get(f"{fake.base_url}/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


def test_queued_plans_win_over_directives_in_fifo_order(fake: FakeUpstreamHandle) -> None:
    plans = [{"kind": "text", "text": "one"}, {"kind": "error", "status": 503}]
    queued = httpx.post(f"{fake.base_url}/_fake/script", json=plans)
    assert queued.json() == {"queued": 2}
    first = httpx.post(f"{fake.base_url}/v1/messages", json=_body("[[fake:text text=zzz]]"))
    second = httpx.post(f"{fake.base_url}/v1/messages", json=_body("[[fake:text text=zzz]]"))
    third = httpx.post(f"{fake.base_url}/v1/messages", json=_body("[[fake:text text=zzz]]"))
    assert first.json()["content"][0]["text"] == "one"
    assert second.status_code == 503
    assert third.json()["content"][0]["text"] == "zzz"


def test_script_endpoint_rejects_unknown_parameters(fake: FakeUpstreamHandle) -> None:
    response = httpx.post(f"{fake.base_url}/_fake/script", json=[{"kind": "text", "colour": 1}])
    assert response.status_code == 400
    assert "colour" in response.json()["error"]["message"]


def test_request_log_records_requests_and_reset_clears_it(fake: FakeUpstreamHandle) -> None:
    headers = {"x-api-key": "secret", "anthropic-version": "2023-06-01"}
    httpx.post(f"{fake.base_url}/v1/messages?beta=true", json=_body("hi"), headers=headers)
    httpx.post(f"{fake.base_url}/v1/messages/count_tokens", json=_body("hi"))
    log = httpx.get(f"{fake.base_url}/_fake/requests").json()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/v1/messages", 200),
        ("POST", "/v1/messages/count_tokens", 200),
    ]
    assert log[0]["query"] == "beta=true"
    assert log[0]["headers"]["anthropic-version"] == "2023-06-01"
    assert log[0]["headers"]["x-api-key"] == "<redacted>"
    assert log[0]["json"]["messages"][0]["content"] == "hi"
    only = httpx.get(f"{fake.base_url}/_fake/requests", params={"path": "/v1/messages"}).json()
    assert len(only) == 1
    fake.enqueue({"kind": "text", "text": "queued"})
    httpx.post(f"{fake.base_url}/_fake/reset")
    assert httpx.get(f"{fake.base_url}/_fake/requests").json() == []
    after = httpx.post(f"{fake.base_url}/v1/messages", json=_body("hi"))
    assert after.json()["content"][0]["text"] == "Echo: hi"


def test_error_times_counts_per_conversation(fake: FakeUpstreamHandle) -> None:
    url = f"{fake.base_url}/v1/messages"
    directive = "[[fake:error status=500 times=1]]"
    assert httpx.post(url, json=_body(directive)).status_code == 500
    assert httpx.post(url, json=_body(directive)).status_code == 200
    other = _body(directive)
    other["messages"].insert(0, {"role": "user", "content": "earlier"})
    assert httpx.post(url, json=other).status_code == 500


def test_drop_with_times_fails_once_then_streams(fake: FakeUpstreamHandle) -> None:
    url = f"{fake.base_url}/v1/messages"
    body = _body("[[fake:text tokens=5 drop_after=3 times=1]]", stream=True)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json=body)
    assert _events(httpx.post(url, json=body).text)[-1][0] == "message_stop"
    assert [e.get("dropped", False) for e in fake.requests()] == [True, False]


async def test_stopping_the_fake_ends_open_streams_promptly() -> None:
    async with httpx.AsyncClient() as http:
        async with fake_upstream_task() as handle:
            request = http.build_request(
                "POST",
                f"{handle.base_url}/v1/messages",
                json=_body("[[fake:text tokens=1000 rate=2]]", stream=True),
            )
            response = await http.send(request, stream=True)
            chunks = response.aiter_raw()
            assert b"message_start" in await anext(chunks)
            stopped_at = time.monotonic()
        assert time.monotonic() - stopped_at < 1.5
        with pytest.raises(httpx.RemoteProtocolError):
            async for _ in chunks:
                pass
        await response.aclose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_runs_a_standalone_server() -> None:
    port = _free_port()
    code = f"from app.devtools.fake_upstream import serve; serve('127.0.0.1', {port})"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "serve() exited"
                assert time.monotonic() < deadline, "serve() did not start listening"
                time.sleep(0.05)
        assert health.json() == {"status": "ok"}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=_body("yo"))
        assert reply.json()["content"][0]["text"] == "Echo: yo"
    finally:
        process.terminate()
        process.wait(10)


def test_a_tool_directive_matches_the_mcp_name_the_cli_offers(fake: FakeUpstreamHandle) -> None:
    tools = [
        {"name": "Read", "input_schema": {"type": "object"}},
        {"name": "mcp__copilot__calculate", "input_schema": {"type": "object"}},
    ]
    body = _body('[[fake:tool name=calculate input={"expression": "6*7"}]]', tools=tools)
    reply = httpx.post(f"{fake.base_url}/v1/messages", json=body, timeout=10).json()
    uses = [block for block in reply["content"] if block["type"] == "tool_use"]
    assert [u["name"] for u in uses] == ["mcp__copilot__calculate"]
    assert uses[0]["input"] == {"expression": "6*7"}
