"""`POST /v1/messages` on aiohttp: the SDK client's headers, error statuses, proxies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.backends.anthropic_api import create_client
from app.backends.anthropic_errors import classify
from app.backends.anthropic_http import MessagesHttp, StatusError
from app.config import AnthropicSettings

REPLY = {"type": "message", "content": [{"type": "text", "text": "Hello there"}]}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A stand-in upstream (and, for absolute-form requests, a proxy) recording requests."""
    seen: list[web.Request] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        body = await request.json()
        answer = body["messages"][-1]["content"]
        if answer == "rate limited":
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
            return web.json_response(error, status=429, headers={"retry-after": "7"})
        if answer == "broken":
            return web.Response(status=502, text="<html>bad gateway</html>")
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for event in ({"type": "message_start"}, {"type": "message_stop"}):
                await response.write(b"event: x\ndata: " + orjson.dumps(event) + b"\n\n")
            return response
        return web.json_response(REPLY)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": text}], **extra}


async def test_a_message_is_asked_with_the_sdk_clients_headers(
    upstream: tuple[str, list[web.Request]],
) -> None:
    url, seen = upstream
    settings = AnthropicSettings(api_key="sk-test")
    client = create_client(settings, url)
    http = MessagesHttp(client)
    try:
        assert await http.create(_body("hi")) == REPLY
        async with http.post(_body("hi", stream=True)) as response:
            streamed = b"".join([chunk async for chunk in response.content.iter_any()])
    finally:
        await http.close()
        await client.close()
    assert b'"message_stop"' in streamed
    for key, value in client.auth_headers.items():
        assert seen[0].headers[key] == value
    assert seen[0].headers["anthropic-version"] == client.default_headers["anthropic-version"]
    assert not [key for key in seen[0].headers if key.lower().startswith("x-stainless")]


async def test_an_error_status_is_classified_as_the_sdks_would_be(
    upstream: tuple[str, list[web.Request]],
) -> None:
    url, _ = upstream
    client = create_client(AnthropicSettings(), url)
    http = MessagesHttp(client)
    try:
        with pytest.raises(StatusError) as limited:
            await http.create(_body("rate limited"))
        with pytest.raises(StatusError) as broken:
            await http.create(_body("broken"))
    finally:
        await http.close()
        await client.close()
    error = classify(limited.value)
    assert (error.code, error.status, error.retry_after_s) == ("rate_limited", 429, 7.0)
    assert error.detail == "slow"
    bad_gateway = classify(broken.value)
    assert (bad_gateway.code, bad_gateway.status) == ("upstream_unavailable", 502)


async def test_a_refused_connection_is_upstream_unavailable() -> None:
    client = create_client(AnthropicSettings(), "http://127.0.0.1:9")
    http = MessagesHttp(client)
    try:
        with pytest.raises(aiohttp.ClientError) as refused:
            await http.create(_body("hi"))
    finally:
        await http.close()
        await client.close()
    assert classify(refused.value).code == "upstream_unavailable"


async def test_a_proxy_in_the_environment_carries_the_request(
    upstream: tuple[str, list[web.Request]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = upstream
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = create_client(AnthropicSettings(), "http://upstream.invalid")
    http = MessagesHttp(client)
    try:
        assert await http.create(_body("hi")) == REPLY
    finally:
        await http.close()
        await client.close()
    assert seen[-1].url.host == "upstream.invalid"  # asked of the proxy, for the upstream
