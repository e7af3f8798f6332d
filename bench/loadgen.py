"""Load generator of bench/relay.py: streaming chats, run in a process of its own.

Two clients (`--client`):
- `raw` (the quiet harness): HTTP/1.1 over raw asyncio streams (one connection per chat, on
  uvloop when present) instead of an HTTP client library, so that the client, which shares
  the machine's two cores with the servers it measures, spends as little CPU as possible per
  event.
- `httpx` (the busy harness): what an app's backend or a test harness typically runs: one
  `httpx.AsyncClient` on the default asyncio loop (no uvloop), each response read with
  `aiter_lines()`. It costs several times the raw client's CPU per token (bench/relay.py's
  docstring gives the measured factor), on the cores the server under test needs.

Two arrival patterns:
- a burst: `--n` chats started at once (or spread evenly over `--ramp` seconds);
- open loop (`--arrival-rate R --duration S`): chats start as a Poisson process of rate R per
  second for S seconds (exponential gaps from a seeded generator), whatever the server's
  state: a slow server does not slow the arrivals. Each stream reports when it was due and
  how late the client actually started it (`lag_s`: the client's own event loop falling
  behind, which would hide a server's slowness; bench/relay.py reports its p99).

Two kinds of target:
- `ui`: `POST /api/v1/chat {"id", "message"}` answered with the AI SDK UI message stream
  (copilot serve, the minimal relay); a text token is a `text-delta` chunk's words.
- `anthropic`: `POST /v1/messages` with `stream: true` (the fake upstream itself); a text
  token is a `text_delta` event's words.

Protocol with the parent: print `READY`, wait for a line on stdin, run, print one JSON line.
Every stream has a deadline and the whole run has one, so the process always ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

MODEL = "claude-sonnet-4-6"


@dataclass
class StreamResult:
    """What one chat saw."""

    ok: bool = False
    status: int = 0
    ttfb_s: float | None = None
    ttft_s: float | None = None
    tokens: int = 0
    duration_s: float = 0.0
    error: str | None = None
    finish: str | None = None
    due_s: float = 0.0
    lag_s: float = 0.0


@dataclass
class Target:
    """Where and what to send."""

    host: str
    port: int
    kind: str
    tokens: int
    rate: float
    prefix: str
    requests: list[bytes] = field(default_factory=list)


def _request(target: Target, index: int) -> bytes:
    body = orjson.dumps(_body(target, index))
    if target.kind == "anthropic":
        path = "/v1/messages"
        extra = b"x-api-key: bench\r\nanthropic-version: 2023-06-01\r\n"
    else:
        path = "/api/v1/chat"
        extra = b"accept: text/event-stream\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {target.host}:{target.port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


class _SSE:
    """Splits a byte stream into SSE events and keeps what the measurement needs."""

    __slots__ = ("anthropic", "buf", "t0", "result", "parts", "done")

    def __init__(self, anthropic: bool, t0: float, result: StreamResult) -> None:
        self.anthropic = anthropic
        self.buf = b""
        self.t0 = t0
        self.result = result
        self.parts: list[str] = []
        self.done = False

    def feed(self, data: bytes) -> None:
        buf = self.buf + data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        *events, self.buf = buf.split(b"\n\n")
        for raw in events:
            for line in raw.split(b"\n"):
                if line.startswith(b"data: "):
                    self._data(line[6:])

    def _data(self, payload: bytes) -> None:
        if self.anthropic:
            if b'"text_delta"' in payload:
                self._text(orjson.loads(payload)["delta"]["text"])
            elif b'"message_stop"' in payload:
                self.done = True
            elif b'"type":"error"' in payload:
                self.result.error = payload[:200].decode(errors="replace")
            elif b'"message_delta"' in payload:
                self.result.finish = orjson.loads(payload)["delta"]["stop_reason"]
            return
        if b'"text-delta"' in payload:
            self._text(orjson.loads(payload)["delta"])
        elif payload == b"[DONE]":
            self.done = True
        elif b'"type":"finish"' in payload:
            self.result.finish = orjson.loads(payload)["finishReason"]
        elif b'"type":"error"' in payload or b'"data-error"' in payload:
            self.result.error = payload[:200].decode(errors="replace")

    def _text(self, text: str) -> None:
        if self.result.ttft_s is None:
            self.result.ttft_s = time.perf_counter() - self.t0
        self.parts.append(text)


async def _read_body(reader: asyncio.StreamReader, head: bytes, sse: _SSE) -> None:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                return
            sse.feed((await reader.readexactly(size + 2))[:-2])
    marker = lower.find(b"content-length:")
    if marker >= 0:
        length = int(lower[marker + 15 : lower.index(b"\r\n", marker)])
        sse.feed(await reader.readexactly(length))
        return
    while chunk := await reader.read(65536):
        sse.feed(chunk)


def _body(target: Target, index: int) -> dict[str, Any]:
    directive = f"[[fake:text tokens={target.tokens} rate={target.rate:g}]]"
    if target.kind == "anthropic":
        return {
            "model": MODEL,
            "max_tokens": 4096,
            "stream": True,
            "messages": [{"role": "user", "content": directive}],
        }
    return {"id": f"{target.prefix}-{index}", "message": directive}


async def _one_httpx(
    client: Any, target: Target, index: int, limit_s: float, t0: float
) -> StreamResult:
    """One chat through `httpx.AsyncClient`, its response read line by line."""
    import httpx

    result = StreamResult()
    sse = _SSE(target.kind == "anthropic", t0, result)
    if target.kind == "anthropic":
        path, headers = "/v1/messages", {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
    else:
        path, headers = "/api/v1/chat", {"accept": "text/event-stream"}
    try:
        async with asyncio.timeout(limit_s):
            async with client.stream(
                "POST", path, json=_body(target, index), headers=headers
            ) as response:
                result.ttfb_s = time.perf_counter() - t0
                result.status = response.status_code
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        sse._data(line[6:].encode())
                    elif result.status != 200 and len(sse.buf) < 200:
                        sse.buf += line.encode()
    except TimeoutError:
        result.error = f"timeout after {limit_s:.0f}s"
    except (httpx.HTTPError, OSError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return _finish(result, sse, target, t0)


async def _one(target: Target, index: int, limit_s: float, client: Any = None) -> StreamResult:
    t0 = time.perf_counter()
    if client is not None:
        return await _one_httpx(client, target, index, limit_s, t0)
    result = StreamResult()
    sse = _SSE(target.kind == "anthropic", t0, result)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit_s):
            reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
            writer.write(target.requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            result.ttfb_s = time.perf_counter() - t0
            result.status = int(head[9:12])
            await _read_body(reader, head, sse)
    except TimeoutError:
        result.error = f"timeout after {limit_s:.0f}s"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return _finish(result, sse, target, t0)


def _finish(result: StreamResult, sse: _SSE, target: Target, t0: float) -> StreamResult:
    result.duration_s = time.perf_counter() - t0
    result.tokens = len("".join(sse.parts).split())
    if result.error is None:
        if result.status != 200:
            result.error = f"HTTP {result.status}: {sse.buf[:200]!r}"
        elif not sse.done:
            result.error = "stream ended without its end marker"
        elif result.tokens != target.tokens:
            result.error = f"{result.tokens} tokens, expected {target.tokens}"
    result.ok = result.error is None
    return result


def schedule(
    n: int, ramp_s: float, arrival_rate: float, duration_s: float, seed: int
) -> list[float]:
    """When each chat is due, in seconds from the start: a burst (all at 0, or evenly over
    `ramp_s`), or a Poisson process of `arrival_rate` per second over `duration_s`."""
    if arrival_rate > 0:
        rng = random.Random(seed)
        due, at = [], rng.expovariate(arrival_rate)
        while at < duration_s:
            due.append(at)
            at += rng.expovariate(arrival_rate)
        return due
    if ramp_s > 0 and n > 1:
        return [ramp_s * i / (n - 1) for i in range(n)]
    return [0.0] * n


@contextlib.asynccontextmanager
async def _client(target: Target, kind: str, limit_s: float) -> AsyncIterator[Any]:
    if kind == "raw":
        yield None
        return
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://{target.host}:{target.port}",
        timeout=httpx.Timeout(limit_s, connect=30),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
    ) as client:
        # The client's first request pays one-off costs (~0.2 s of blocked event loop):
        # pay them before the start signal.
        with contextlib.suppress(httpx.HTTPError):
            await client.get("/healthz")
        yield client


async def run(
    target: Target, due: list[float], limit_s: float, client_kind: str = "raw"
) -> dict[str, Any]:
    """Say READY, wait for the start line on stdin, then start a chat at each `due` offset
    (seconds from the start) and wait for all of them."""
    target.requests = [_request(target, i) for i in range(len(due))]
    async with _client(target, client_kind, limit_s) as client:
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu0, wall0 = time.process_time(), time.perf_counter()

        async def started(index: int) -> StreamResult:
            if due[index] > 0:
                await asyncio.sleep(wall0 + due[index] - time.perf_counter())
            lag = time.perf_counter() - wall0 - due[index]
            result = await _one(target, index, limit_s, client)
            result.due_s, result.lag_s = due[index], lag
            return result

        results = await asyncio.gather(*(started(i) for i in range(len(due))))
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, "streams": [asdict(r) for r in results]}


def main() -> None:
    """Parse arguments, report READY, wait for the go line, run, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=("ui", "anthropic"), required=True)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--n", type=int, default=0, help="chats of a burst")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--ramp", type=float, default=0.0)
    parser.add_argument(
        "--arrival-rate", type=float, default=0.0, help="open loop: new chats per second"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="open loop: seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    url = urlsplit(args.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loadgen only targets loopback addresses")
    if args.arrival_rate <= 0 and args.n <= 0:
        sys.exit("give --n or --arrival-rate")
    target = Target(url.hostname, url.port or 80, args.kind, args.tokens, args.rate, args.prefix)
    due = schedule(args.n, args.ramp, args.arrival_rate, args.duration, args.seed)
    runner: Any = asyncio.run
    if args.client == "raw":
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    report = runner(run(target, due, args.timeout, args.client))
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
