"""The clients of bench/fleet.py: N live chats on two replicas, run in a process of its own.

Half the chats are POSTed to replica A, half to replica B (`POST /api/v1/chat`, a new session
each). A chat on A behaves like an app whose server dies under it: the moment its connection
drops without the stream's end it asks replica B for the rest (`GET
/api/v1/chat/{id}/stream`, with `Last-Event-ID: <the last id it saw>` unless
`--no-last-event-id`, then the server replays the turn from its start) and reads until
`finish` and `[DONE]`; a resumed stream that drops again is asked for again (at most
`RESUMES` times). A chat on B just reads its stream to the end.

Raw HTTP/1.1 on asyncio (uvloop when present), one connection per stream, as
bench/loadgen.py does (whose chunked-body reader it uses), so the client costs little CPU.
Times are `time.monotonic()` (CLOCK_MONOTONIC: comparable with the parent's clock).

Protocol with the parent: print `READY`; wait for a line on stdin; start the chats; print
`STREAMING <json>` once every chat has received text or ended (or `--ready-timeout` passed),
with how many are streaming text; print one
JSON line when every chat has ended (each has a deadline, `--timeout`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from loadgen import _read_body

RESUMES = 5  # a resumed stream that drops is asked for again, this many times at most


@dataclass
class Chat:
    """What one chat saw."""

    session_id: str
    replica: str  # "a" or "b": where it was POSTed
    status: int = 0
    first_text_at: float | None = None
    dropped_at: float | None = None  # its connection to A ended without `finish`
    resumes: list[int] = field(default_factory=list)  # HTTP status of each resume
    resumed_first_id: int | None = None  # the first id the resumed stream carried
    expected_first_id: int | None = None  # the last id seen + 1 (0: replayed from the start)
    last_id_before_resume: int | None = None
    finish_at: float | None = None
    finish_reason: str | None = None
    error_code: str | None = None  # the `data-error` chunk's code
    done: bool = False  # `[DONE]` came
    kinds: list[str] = field(default_factory=list)  # chunk types, in order
    ids: list[int] = field(default_factory=list)
    text: str = ""
    error: str | None = None  # what went wrong on the client's side


class Feed:
    """SSE frames of one chat (over one or several connections) into its `Chat`."""

    def __init__(self, chat: Chat, has_text: asyncio.Event) -> None:
        self.chat = chat
        self.has_text = has_text
        self.buf = b""
        self.parts: list[str] = []

    def feed(self, data: bytes) -> None:
        buf = self.buf + data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        *events, self.buf = buf.split(b"\n\n")
        for raw in events:
            for line in raw.split(b"\n"):
                if line.startswith(b"id: "):
                    self.chat.ids.append(int(line[4:]))
                elif line.startswith(b"data: "):
                    self._data(line[6:])

    def _data(self, payload: bytes) -> None:
        chat = self.chat
        if payload == b"[DONE]":
            chat.done = True
            return
        chunk = orjson.loads(payload)
        kind = chunk.get("type", "")
        chat.kinds.append(kind)
        if kind == "text-delta":
            self.parts.append(chunk["delta"])
            if chat.first_text_at is None:
                chat.first_text_at = time.monotonic()
                self.has_text.set()
        elif kind == "finish":
            chat.finish_at = time.monotonic()
            chat.finish_reason = chunk.get("finishReason")
        elif kind == "data-error":
            chat.error_code = chunk["data"]["code"]

    def reset(self) -> None:
        """Forget what was seen (a resume that replays the turn from its start)."""
        self.buf = b""
        self.parts.clear()
        self.chat.ids.clear()
        self.chat.kinds.clear()

    @property
    def finished(self) -> bool:
        return self.chat.finish_at is not None


def _head(
    method: str, host: str, port: int, path: str, extra: str = "", body: bytes = b""
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n"
    head += "accept: text/event-stream\r\n" + extra
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _exchange(host: str, port: int, request: bytes, feed: Feed) -> int:
    """Send one request and read its SSE answer into `feed` until the connection ends; the
    HTTP status. Raises what the connection raised (a drop mid-body)."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        if status == 200:
            await _read_body(reader, head, feed)
        return status
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


DROPS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


async def run_chat(
    chat: Chat,
    feed: Feed,
    a: tuple[str, int],
    b: tuple[str, int],
    message: str,
    last_event_id: bool,
) -> None:
    """POST the chat to its replica; on a drop (chats on A) resume it on B."""
    host, port = a if chat.replica == "a" else b
    body = orjson.dumps({"id": chat.session_id, "message": message})
    try:
        request = _head("POST", host, port, "/api/v1/chat", body=body)
        chat.status = await _exchange(host, port, request, feed)
    except DROPS as exc:
        chat.error = f"{type(exc).__name__}: {exc}"[:200]
    if feed.finished or chat.replica == "b" or chat.status not in (0, 200):
        return
    chat.dropped_at = time.monotonic()
    chat.error = None
    host, port = b
    path = f"/api/v1/chat/{chat.session_id}/stream"
    for _ in range(RESUMES):
        extra = ""
        if last_event_id and chat.ids:
            extra = f"last-event-id: {chat.ids[-1]}\r\n"
        if chat.last_id_before_resume is None:
            chat.last_id_before_resume = chat.ids[-1] if chat.ids else -1
            chat.expected_first_id = chat.last_id_before_resume + 1 if last_event_id else 0
        if not last_event_id:
            # Replayed from the start: the message is rebuilt from the replay alone, as the AI
            # SDK does with a resumed stream.
            feed.reset()
        seen = len(chat.ids)
        feed.buf = b""  # a new connection: what the last one left half sent is gone
        try:
            status = await _exchange(host, port, _head("GET", host, port, path, extra), feed)
        except DROPS as exc:
            chat.error = f"resume: {type(exc).__name__}: {exc}"[:200]
            status = 0
        chat.resumes.append(status)
        if chat.resumed_first_id is None and len(chat.ids) > seen:
            chat.resumed_first_id = chat.ids[seen]
        if feed.finished or status == 204:
            return
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> None:
    """Start the chats, report when all stream text, report everything when all ended."""
    a, b = _addr(args.a), _addr(args.b)
    message = f"[[fake:text tokens={args.tokens} rate={args.rate:g}]]"
    chats: list[Chat] = []
    feeds: list[Feed] = []
    events: list[asyncio.Event] = []
    for i in range(args.n):
        replica = "a" if i % 2 == 0 else "b"
        chat = Chat(f"{args.prefix}-{replica}-{i // 2}", replica)
        events.append(asyncio.Event())
        chats.append(chat)
        feeds.append(Feed(chat, events[-1]))

    async def bounded(chat: Chat, feed: Feed) -> None:
        try:
            async with asyncio.timeout(args.timeout):
                await run_chat(chat, feed, a, b, message, not args.no_last_event_id)
        except TimeoutError:
            chat.error = f"timeout after {args.timeout:.0f}s"
        finally:
            feed.has_text.set()  # one that ended (or failed) without text does not hold the rest
        chat.text = "".join(feed.parts)

    cpu0, wall0 = time.process_time(), time.monotonic()
    tasks = [asyncio.create_task(bounded(c, f)) for c, f in zip(chats, feeds, strict=True)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.ready_timeout):
            await asyncio.gather(*(e.wait() for e in events))
    streaming = sum(c.first_text_at is not None and c.finish_at is None for c in chats)
    line = {"streaming": streaming, "at": time.monotonic(), "cpu_s": time.process_time() - cpu0}
    sys.stdout.write("STREAMING " + orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()
    await asyncio.gather(*tasks)
    report: dict[str, Any] = {
        "wall_s": time.monotonic() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "chats": [asdict(c) for c in chats],
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    sys.stdout.flush()


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("fleet clients only target loopback addresses")
    return parts.hostname, parts.port or 80


def main() -> None:
    """Parse arguments, report READY, wait for the go line, run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", required=True, help="replica A's URL (its chats are orphaned)")
    parser.add_argument("--b", required=True, help="replica B's URL (the survivor)")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--prefix", default="fleet")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--no-last-event-id", action="store_true")
    args = parser.parse_args()
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    print("READY", flush=True)
    sys.stdin.readline()
    runner(run(args))


if __name__ == "__main__":
    main()
