"""The HTTP/1.1 protocol of `copilot serve`: uvicorn's httptools protocol with a deadline on
request heads.

uvicorn closes a keep-alive connection that stays idle (`timeout_keep_alive`) but has no limit
on how long a request head may take: a client sending its headers a byte at a time holds its
connection, and a slot of `limit_concurrency`, forever (slowloris). Here a connection must
complete each request head within `header_timeout_s` of its first byte (of connecting, for
the first request), or it is closed, and a head larger than MAX_HEAD_BYTES gets 431.

Cost: one `call_later` and one `cancel` per request, on the event loop's timer heap (the same
mechanism uvicorn uses for keep-alive); no task, and nothing at all once the head is in, so
bodies and streamed responses never see it.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# About the most a request head may hold (h11's default is 16 KiB, nginx's 4 x 8 KiB); the
# count may miss the chunk a keep-alive request begins in.
MAX_HEAD_BYTES = 64 * 1024

_TOO_LARGE_BODY = b"request head is too large"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol closing connections whose request head is too slow or too large."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_bytes = 0
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self.head_timer is not None
        if waiting:
            self.head_bytes += len(data)
        super().data_received(data)
        if waiting and self.head_timer is not None and self.head_bytes > MAX_HEAD_BYTES:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A pipelined head arriving while a response is under way is left alone: closing
        # would cut that response.
        if self.head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self.head_bytes = 0
        self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def head_deadline_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's `http=`, with this deadline on request heads."""
    return type(
        "HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )
