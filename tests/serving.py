"""Run `copilot serve` as a real process and talk to it over HTTP, as a user would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
COPILOT = str(Path(sys.executable).parent / "copilot")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def turns(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    """The session's turns, oldest first (`GET /sessions/{id}/turns`)."""
    return list(http.get(f"/api/v1/sessions/{session_id}/turns").json()["turns"])


def finished_turn(http: httpx.Client, session_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The session's first turn, once it is no longer running."""
    done = wait_until(
        lambda: [t for t in turns(http, session_id) if t["status"] != "running"], timeout
    )
    return dict(done[0])


def sql_rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one statement, read straight from the database (what a server stored)."""

    async def run() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql), params)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def clean_environ() -> dict[str, str]:
    """This process's environment without any of the server's own settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COPILOT_", "ANTHROPIC_", "LANGFUSE_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }


def run_copilot(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a `copilot` command to completion with `env` on top of a clean environment."""
    return subprocess.run(
        [COPILOT, *args],
        cwd=cwd,
        env={**clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def upstream_env(
    upstream_url: str, database_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    """Settings for a server on the test services, pointed at a (fake) upstream."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ANTHROPIC_BASE_URL": upstream_url,
        "ANTHROPIC_API_KEY": "test-key",
        "COPILOT_REDIS_KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
        "COPILOT_TITLE_GENERATION": "0",
        # The Messages API backend unless a test asks for the Claude SDK one (the default
        # of `copilot serve`): most served tests are about the service, not the CLI.
        "COPILOT_BACKEND": "anthropic",
        **extra,
    }


@dataclass
class Served:
    """A running `copilot serve` process."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for this server."""
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30, **kwargs)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve(env: dict[str, str], tmp: Path, *, ready_path: str = "/readyz") -> Iterator[Served]:
    """Start `copilot serve` with `env` on a free port; stop it with SIGTERM afterwards.

    With no drain unless `env` sets `COPILOT_DRAIN_S`: a test that leaves a turn running
    would otherwise wait out the drain at the end."""
    port = free_port()
    log_path = tmp / f"serve-{uuid.uuid4().hex[:6]}.log"
    full_env = {**clean_environ(), "COPILOT_DRAIN_S": "0", **env}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [COPILOT, "serve", "--port", str(port)],
            cwd=tmp,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"copilot serve exited {proc.returncode}:\n{served.log()}")
        try:
            return httpx.get(served.base_url + ready_path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_turn_raw(
    served: Served, session_id: str, message: str, headers: dict[str, str] | None = None
) -> socket.socket:
    """POST a chat message on a raw socket, wait for the answer to begin, leave it unread."""
    body = orjson.dumps({"id": session_id, "message": message})
    host, port = served.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or served.headers).items())
    sock.sendall(
        b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        + head.encode()
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )
    sock.recv(1)
    return sock


@dataclass
class StreamResult:
    """What a client saw on one UI message stream."""

    status: int
    headers: httpx.Headers
    chunks: list[dict[str, Any]]
    ids: list[int]
    comments: int
    done: bool
    body: bytes = b""

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Chunks of one type."""
        return [c for c in self.chunks if c["type"] == kind]

    @property
    def text(self) -> str:
        """All text deltas joined."""
        return "".join(c["delta"] for c in self.of("text-delta"))

    @property
    def error(self) -> dict[str, Any] | None:
        """The data-error payload, if the turn failed."""
        errors = self.of("data-error")
        return errors[0]["data"] if errors else None


def parse_sse(raw: bytes) -> tuple[list[dict[str, Any]], list[int], int, bool]:
    """Chunks, `id:` values, number of comment lines, and whether `[DONE]` came."""
    chunks: list[dict[str, Any]] = []
    ids: list[int] = []
    comments = 0
    done = False
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b":"):
                comments += 1
            elif line.startswith(b"id: "):
                ids.append(int(line[4:]))
            elif line.startswith(b"data: "):
                payload = line[6:]
                if payload == b"[DONE]":
                    done = True
                else:
                    chunks.append(orjson.loads(payload))
    return chunks, ids, comments, done


def stream(client: httpx.Client, method: str, path: str, **kwargs: Any) -> StreamResult:
    """Send a request and read the whole SSE answer."""
    with client.stream(method, path, **kwargs) as response:
        body = response.read()
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return StreamResult(response.status_code, response.headers, [], [], 0, False, body)
    chunks, ids, comments, done = parse_sse(body)
    return StreamResult(response.status_code, response.headers, chunks, ids, comments, done, body)


def assert_well_formed(result: StreamResult) -> None:
    """The stream obeys the UI message stream rules of design.md section 4."""
    assert result.status == 200, result.body
    assert result.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert result.headers["cache-control"] == "no-cache"
    assert result.headers["x-accel-buffering"] == "no"
    assert result.done, "no [DONE]"
    kinds = [c["type"] for c in result.chunks]
    assert kinds.count("start") == 1
    assert kinds[0] == "start"
    assert kinds.count("finish") == 1
    assert kinds[-1] == "finish"
    assert result.chunks[-1].get("finishReason") in (
        "stop",
        "length",
        "tool-calls",
        "error",
        "other",
    )
    assert result.ids == list(range(len(result.ids)))
    in_step = False
    open_parts: set[str] = set()
    for chunk in result.chunks:
        assert None not in chunk.values(), f"null field in {chunk}"
        kind = chunk["type"]
        if kind == "start-step":
            assert not in_step
            in_step = True
        elif kind == "finish-step":
            assert in_step
            assert not open_parts, f"finish-step with open parts {open_parts}"
            in_step = False
        elif kind in ("text-start", "reasoning-start"):
            assert in_step
            open_parts.add(chunk["id"])
        elif kind in ("text-delta", "reasoning-delta"):
            assert chunk["id"] in open_parts
        elif kind in ("text-end", "reasoning-end"):
            open_parts.remove(chunk["id"])
        elif kind == "finish":
            assert not in_step
    if result.error is not None:
        assert kinds.index("data-error") < kinds.index("error") < kinds.index("finish")
