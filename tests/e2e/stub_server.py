"""A throwaway stand-in for copilot-server's chat endpoints, used to validate chat-client.mjs.

It answers `POST /api/v1/chat` with a hard-coded UI message stream per scenario (picked from
the last user message: the tool, error and slow-text directives of chat-client.mjs, else plain
text) and `GET /api/v1/chat/{id}/stream` with a replay from `start`, then live, while the
chat's turn runs; with 204 once it ended, or with a replay of the finished turn when started
with `--resume replay`. Every stream uses only the cross-version chunk set of PROTOCOL.md, so
`node chat-client.mjs` passing against it for ai5, ai6 and ai7 pins that set.

    uv run python tests/e2e/stub_server.py --port 8765 [--resume replay] [--dynamic-tools]
        [--token SECRET] [--fault NAME ...]

`--fault` breaks the streams on purpose (see FAULTS) so selftest.mjs can check that the
client notices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Chunk = dict[str, Any]

STREAM_HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
TOOL_DIRECTIVE = re.compile(r"\[\[fake:tool name=(?P<name>[\w-]+) input=(?P<input>\{.*?\})\]\]")
ERROR_DIRECTIVE = re.compile(r"\[\[fake:error status=(?P<status>\d+)\]\]")
SLOW_DIRECTIVE = re.compile(r"\[\[fake:text tokens=(?P<tokens>\d+) rate=(?P<rate>\d+)\]\]")
TEXT_DIRECTIVE = re.compile(r"\[\[fake:text text=\"(?P<text>[^\"]*)\"\]\]")
CHUNK_DELAY_S = 0.002


FAULTS = {
    "unknown-chunk": "a chunk type no version knows, after start",
    "null-field": "text-start with providerMetadata: null",
    "finish-interrupted": "finishReason 'interrupted' (only recent ai 7 knows it)",
    "extra-field": "an unknown top-level field on finish (strict releases reject it)",
    "dynamic-mismatch": "dynamic: true on the tool input chunks but not on the output chunk",
    "delta-before-start": "text-delta without text-start",
    "no-done": "no data: [DONE] at the end",
    "no-ids": "no id: lines",
    "resume-tail": "a resume while the turn runs sends only what comes next, not a replay",
    "no-provider-executed": "tool chunks without providerExecuted",
    "busy-after-done": "409 for a message sent within a second of the previous turn's end",
}


class StubState:
    """What the stub remembers: options and each chat's last turn (for replays)."""

    def __init__(
        self, resume: str, dynamic_tools: bool, token: str | None, faults: list[str]
    ) -> None:
        self.resume = resume
        self.dynamic_tools = dynamic_tools
        self.token = token
        self.faults = set(faults)
        self.turns: dict[str, LiveTurn] = {}


class LiveTurn:
    """One turn being streamed: its frames so far, for the POST and any resume to tail."""

    def __init__(self, chunks: list[Chunk], faults: set[str], delay_s: float) -> None:
        self.faults = faults
        self.frames: list[bytes] = []
        self.done = False
        self.ended_at: float | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._produce(break_chunks(chunks, faults), delay_s))

    async def _produce(self, chunks: list[Chunk], delay_s: float) -> None:
        for seq, chunk in enumerate(chunks):
            payload = json.dumps(chunk, separators=(",", ":"))
            id_line = "" if "no-ids" in self.faults else f"id: {seq}\n"
            self.frames.append(f"{id_line}data: {payload}\n\n".encode())
            self._wake()
            await asyncio.sleep(delay_s)
        self.done = True
        self.ended_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def tail(self, index: int) -> AsyncIterator[bytes]:
        """Frames from `index` on as they come, a `: ping` after the first, then [DONE]."""
        while True:
            if index < len(self.frames):
                yield self.frames[index]
                if index == 0:
                    yield b": ping\n\n"
                index += 1
            elif self.done:
                break
            else:
                await self._changed.wait()
        if "no-done" not in self.faults:
            yield b"data: [DONE]\n\n"


def error_body(status: int, code: str, message: str) -> JSONResponse:
    """The design's pre-stream error shape."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def last_user_text(messages: list[Any]) -> str:
    """Concatenated text parts of the last user message."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = message.get("parts") or []
            return "".join(
                p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
            )
    return ""


def text_part(part_id: str, text: str) -> list[Chunk]:
    """A text part: opened, streamed in a few deltas, closed."""
    words = text.split(" ")
    deltas = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return [
        {"type": "text-start", "id": part_id},
        *({"type": "text-delta", "id": part_id, "delta": d} for d in deltas),
        {"type": "text-end", "id": part_id},
    ]


def finish(reason: str) -> Chunk:
    """The closing chunk: finishReason plus usage in messageMetadata."""
    usage = {"input_tokens": 12, "output_tokens": 7}
    return {"type": "finish", "finishReason": reason, "messageMetadata": {"usage": usage}}


def text_turn(message_id: str, reply: str) -> list[Chunk]:
    """A plain reply in one step."""
    return [
        {"type": "start", "messageId": message_id},
        {"type": "start-step"},
        *text_part("text-0", reply),
        {"type": "finish-step"},
        finish("stop"),
    ]


def tool_turn(
    message_id: str, name: str, tool_input: Any, dynamic: bool, faults: set[str]
) -> list[Chunk]:
    """A server-executed tool call in step one, then a reply quoting its result in step two."""
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    flags: dict[str, bool] = {} if "no-provider-executed" in faults else {"providerExecuted": True}
    if dynamic:
        flags["dynamic"] = True
    output = {"iso": datetime.now(UTC).isoformat(timespec="seconds")}
    return [
        {"type": "start", "messageId": message_id},
        {"type": "start-step"},
        {"type": "tool-input-start", "toolCallId": call_id, "toolName": name, **flags},
        {
            "type": "tool-input-delta",
            "toolCallId": call_id,
            "inputTextDelta": json.dumps(tool_input),
        },
        {
            "type": "tool-input-available",
            "toolCallId": call_id,
            "toolName": name,
            "input": tool_input,
            **flags,
        },
        {"type": "tool-output-available", "toolCallId": call_id, "output": output, **flags},
        {"type": "finish-step"},
        {"type": "start-step"},
        *text_part("text-1", f"The tool {name} says it is {output['iso']}."),
        {"type": "finish-step"},
        finish("stop"),
    ]


def error_turn(message_id: str, status: int) -> list[Chunk]:
    """An upstream failure after the stream started: data-error, then error, then finish."""
    retryable = status in (429, 500, 502, 503, 529)
    message = f"The model upstream answered HTTP {status}."
    code = "upstream_auth" if status in (401, 403) else f"upstream_{status}"
    return [
        {"type": "start", "messageId": message_id},
        {"type": "start-step"},
        {"type": "finish-step"},
        {
            "type": "data-error",
            "id": "error-0",
            "data": {"code": code, "message": message, "retryable": retryable},
        },
        {"type": "error", "errorText": message},
        finish("error"),
    ]


def break_chunks(chunks: list[Chunk], faults: set[str]) -> list[Chunk]:
    """Apply the chunk-level --fault options."""
    out: list[Chunk] = []
    for chunk in chunks:
        chunk = dict(chunk)
        kind = chunk["type"]
        if "delta-before-start" in faults and kind in ("text-start", "text-end"):
            continue
        if "null-field" in faults and kind == "text-start":
            chunk["providerMetadata"] = None
        if "dynamic-mismatch" in faults and kind == "tool-output-available":
            chunk.pop("dynamic", None)
        if kind == "finish":
            if "finish-interrupted" in faults:
                chunk["finishReason"] = "interrupted"
            if "extra-field" in faults:
                chunk["durationMs"] = 1234
        out.append(chunk)
        if "unknown-chunk" in faults and kind == "start":
            out.append({"type": "heartbeat"})
    return out


def authorized(request: Request, state: StubState) -> bool:
    """Bearer token check, when the stub was started with one."""
    if state.token is None:
        return True
    return request.headers.get("authorization") == f"Bearer {state.token}"


async def post_chat(request: Request) -> Response:
    """Start a (fake) turn and stream it."""
    state: StubState = request.app.state.stub
    if not authorized(request, state):
        return error_body(401, "unauthorized", "missing or wrong bearer token")
    try:
        body = await request.json()
    except ValueError:
        return error_body(422, "invalid_body", "body is not JSON")
    chat_id = body.get("id") if isinstance(body, dict) else None
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(chat_id, str) or not isinstance(messages, list) or not messages:
        return error_body(422, "invalid_body", "expected {id, messages, trigger, messageId?}")
    previous = state.turns.get(chat_id)
    if previous is not None and not previous.done:
        return error_body(409, "turn_in_progress", "a turn is already running in this chat")
    if (
        "busy-after-done" in state.faults
        and previous is not None
        and previous.ended_at is not None
        and time.monotonic() - previous.ended_at < 1.0
    ):
        return error_body(409, "turn_in_progress", "the previous turn is still being stored")
    text = last_user_text(messages)
    message_id = f"msg_{uuid.uuid4().hex}"
    delay_s = CHUNK_DELAY_S
    if tool := TOOL_DIRECTIVE.search(text):
        chunks = tool_turn(
            message_id, tool["name"], json.loads(tool["input"]), state.dynamic_tools, state.faults
        )
    elif error := ERROR_DIRECTIVE.search(text):
        chunks = error_turn(message_id, int(error["status"]))
    elif slow := SLOW_DIRECTIVE.search(text):
        words = " ".join(f"word{i}" for i in range(int(slow["tokens"])))
        chunks = text_turn(message_id, words)
        delay_s = 1 / max(int(slow["rate"]), 1)
    elif literal := TEXT_DIRECTIVE.search(text):
        chunks = text_turn(message_id, literal["text"])
    else:
        reply = f"Hello from the stub. I have seen {len(messages)} message(s) in this chat."
        chunks = text_turn(message_id, reply)
    turn = LiveTurn(chunks, state.faults, delay_s)
    state.turns[chat_id] = turn
    return StreamingResponse(turn.tail(0), headers=STREAM_HEADERS)


async def resume_chat(request: Request) -> Response:
    """Resume: the running turn replayed from `start`, then live; 204 when none runs (with
    --resume replay, the finished turn replayed instead)."""
    state: StubState = request.app.state.stub
    if not authorized(request, state):
        return error_body(401, "unauthorized", "missing or wrong bearer token")
    turn = state.turns.get(request.path_params["chat_id"])
    if turn is None or (turn.done and state.resume != "replay"):
        return Response(status_code=204)
    start = len(turn.frames) if "resume-tail" in state.faults and not turn.done else 0
    return StreamingResponse(turn.tail(start), headers=STREAM_HEADERS)


def build_app(state: StubState) -> Starlette:
    """The stub's ASGI app."""
    app = Starlette(
        routes=[
            Route("/api/v1/chat", post_chat, methods=["POST"]),
            Route("/api/v1/chat/{chat_id}/stream", resume_chat, methods=["GET"]),
        ]
    )
    app.state.stub = state
    return app


def main() -> None:
    """Parse arguments and serve on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--resume", choices=["none", "replay"], default="none")
    parser.add_argument("--dynamic-tools", action="store_true")
    parser.add_argument("--token", default=None)
    parser.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS))
    args = parser.parse_args()
    state = StubState(args.resume, args.dynamic_tools, args.token, args.fault)
    print(f"stub listening on http://127.0.0.1:{args.port}", flush=True)
    uvicorn.run(build_app(state), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
