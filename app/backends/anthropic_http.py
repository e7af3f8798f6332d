"""`POST /v1/messages` on aiohttp directly, for the two hot calls: a turn's model call and a
session's title.

The `anthropic` SDK's request path (`with_streaming_response.create`: its parameter models,
its httpx-shaped request and response objects over the aiohttp transport) costs about
1.45 ms of CPU per request on this machine; the same request made here costs 0.31 ms (400
title requests, 8 at once, against the fake upstream; issue #15). Under a burst of 500 new
chats that is 500 model calls and 500 titles: about a second of the one event loop, paid
exactly when the burst lands. The SDK's client still owns the configuration: the base URL
and every default header (authentication, `anthropic-version`) are taken from it, so both
paths send the same request, and it still makes the rare calls (a compaction's summary).

An error status raises `StatusError` with the status, the parsed body and the headers, which
`anthropic_errors.classify` maps as it maps the SDK's `APIStatusError`.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import anthropic
import orjson

MAX_CONNECTIONS = 2000  # to the upstream, per replica and client (one per streaming reply)


def proxy_for(url: str) -> str | None:
    """The proxy the environment (`HTTP(S)_PROXY`, `ALL_PROXY`, `NO_PROXY`) names for `url`,
    looked up once: aiohttp's `trust_env` looks it up, `.netrc` included, on a worker thread
    for every request."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class StatusError(Exception):
    """The Messages API answered with an error status."""

    def __init__(self, status: int, body: object, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}: {body!r}"[:500])
        self.status = status
        self.body = body
        self.headers = headers


class MessagesHttp:
    """One aiohttp session to the upstream, configured from an `anthropic` client."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.url = str(client.base_url).rstrip("/") + "/v1/messages"
        self.headers = {
            key: str(value)
            for key, value in client.default_headers.items()
            if isinstance(value, str) and not key.lower().startswith("x-stainless")
        }
        timeout = client.timeout
        if isinstance(timeout, anthropic.Timeout):
            connect, read = timeout.connect, timeout.read
        else:
            connect = read = float(timeout) if timeout is not None else None
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        self.proxy = proxy_for(self.url)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0),
                timeout=self.timeout,
            )
        return self._session

    @contextlib.asynccontextmanager
    async def post(self, body: dict[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to `body`, its status 2xx (else `StatusError`); read it inside."""
        async with self._open().post(
            self.url, data=orjson.dumps(body), headers=self.headers, proxy=self.proxy
        ) as response:
            if response.status >= 400:
                raw = await response.read()
                try:
                    parsed: object = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    parsed = raw.decode("utf-8", "replace")
                raise StatusError(response.status, parsed, response.headers)
            yield response

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """A message, not streamed, as the API's JSON object."""
        async with self.post(body) as response:
            reply: dict[str, Any] = orjson.loads(await response.read())
        return reply

    async def close(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
