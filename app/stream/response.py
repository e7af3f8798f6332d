"""The SSE response: pre-encoded frames sent as they come, one write per batch.

Deliberately small instead of sse-starlette's `EventSourceResponse` (which costs about a
seventh of the CPU of a streamed turn: a task group of three or four tasks per response and a
cancel scope per send). What it keeps: a disconnect watcher that ends the body at once, and a
send timeout that drops a client which stopped reading. Heartbeats are the producer's
business (`: ping` frames in the body); shutdown is handled by interrupting the turns
(`TurnRegistry.interrupt_all`), which ends their streams with a proper `finish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)


class EventStream(Response):
    """An ASGI `text/event-stream` response over an async generator of encoded frames."""

    media_type = "text/event-stream; charset=utf-8"

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        headers: Mapping[str, str],
        send_timeout_s: float,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        # Like StreamingResponse: no `self.body`, so no content-length header is computed.
        self.frames = frames
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.send_timeout_s = send_timeout_s
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        sending_since = 0.0  # when the send under way began (0: none); no timer per send
        why = ""

        async def watch() -> None:
            """End the stream when the client goes, or when one send takes too long."""
            nonlocal why
            while True:
                try:
                    async with asyncio.timeout(self.send_timeout_s / 2):
                        while (await receive())["type"] != "http.disconnect":
                            pass
                    why = "gone"
                    break
                except TimeoutError:
                    if sending_since and loop.time() - sending_since > self.send_timeout_s:
                        why = "stuck"
                        break
            task.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.frames:
                sending_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sending_since = 0.0
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not why:
                raise
            task.uncancel()
            if why == "stuck":
                log.info("dropped a client that stopped reading for %.0fs", self.send_timeout_s)
        except OSError:
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await self.frames.aclose()
            if self.on_close is not None:
                self.on_close()
