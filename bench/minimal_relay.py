"""The minimal relay of bench/relay.py: the floor any Anthropic -> AI SDK UI stream server pays.

FastAPI plus the `anthropic` SDK, each upstream text delta turned straight into a UI chunk.
No database, no Redis, no retries, no EventLog, no persistence. It uses the SDK as a peer
would: `messages.create(stream=True)` raw events (not the costlier `messages.stream()`
helper) on the SDK's default httpx transport, `max_retries=0`, the connection-pool limits
copilot serve uses, uvicorn with its default (uvloop, httptools) stack and no access log.
copilot serve reads the same API more cheaply (the SDK's aiohttp transport, its own event
decoding): README.md says what that is worth, and what this relay gets on aiohttp too.

    python bench/minimal_relay.py --port 8101 --upstream http://127.0.0.1:8100
"""

from __future__ import annotations

import argparse
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import orjson
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

MODEL = "claude-sonnet-4-6"
HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
DONE = b"data: [DONE]\n\n"


class ChatBody(BaseModel):
    """`{id, message}`, as the benchmark sends it to copilot serve too."""

    id: str
    message: str


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def create_app(upstream: str) -> FastAPI:
    """The relay app, its Anthropic client opened in the lifespan."""
    clients: dict[str, anthropic.AsyncAnthropic] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = anthropic.AsyncAnthropic(
            api_key="bench",
            base_url=upstream,
            max_retries=0,
            timeout=anthropic.Timeout(600, connect=10),
            http_client=anthropic.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=2000, max_keepalive_connections=500),
            ),
        )
        clients["anthropic"] = client
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(lifespan=lifespan)

    async def relay(body: ChatBody) -> AsyncIterator[bytes]:
        client = clients["anthropic"]
        yield _sse({"type": "start", "messageId": f"msg-{uuid.uuid4().hex}"})
        text_id = "t0"
        opened = False
        finish = "stop"
        try:
            stream = await client.messages.create(
                model=MODEL,
                max_tokens=4096,
                messages=[{"role": "user", "content": [{"type": "text", "text": body.message}]}],
                stream=True,
            )
            yield _sse({"type": "start-step"})
            async with stream:
                async for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if not opened:
                            opened = True
                            yield _sse({"type": "text-start", "id": text_id})
                        yield _sse({"type": "text-delta", "id": text_id, "delta": event.delta.text})
                    elif event.type == "message_delta" and event.delta.stop_reason == "max_tokens":
                        finish = "length"
            if opened:
                yield _sse({"type": "text-end", "id": text_id})
            yield _sse({"type": "finish-step"})
        except anthropic.APIError as exc:
            finish = "error"
            yield _sse({"type": "error", "errorText": f"{type(exc).__name__}: {exc}"})
        yield _sse({"type": "finish", "finishReason": finish})
        yield DONE

    @app.post("/api/v1/chat")
    async def chat(body: ChatBody) -> StreamingResponse:
        """Relay one chat turn as an AI SDK UI message stream."""
        return StreamingResponse(relay(body), media_type="text/event-stream", headers=HEADERS)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    return app


def main() -> None:
    """Serve the relay on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
