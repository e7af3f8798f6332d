"""The Anthropic client's transport: aiohttp, unless a proxy applies to the upstream."""

from __future__ import annotations

import anthropic
import pytest

from app.backends.anthropic_api import create_client
from app.config import AnthropicSettings


def _transport(client: anthropic.AsyncAnthropic) -> str:
    return type(client._client._transport).__name__


async def test_the_client_runs_on_the_aiohttp_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    client = create_client(AnthropicSettings(), "http://127.0.0.1:9")
    assert _transport(client) == "AiohttpTransport"
    await client.close()


async def test_a_proxy_for_the_upstream_keeps_the_httpx_transport_which_honours_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = create_client(AnthropicSettings(), "https://api.anthropic.com")
    assert _transport(client) != "AiohttpTransport"
    await client.close()
    monkeypatch.setenv("NO_PROXY", "api.anthropic.com")
    client = create_client(AnthropicSettings(), "https://api.anthropic.com")
    assert _transport(client) == "AiohttpTransport"
    await client.close()
