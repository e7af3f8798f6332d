"""The claude_sdk backend against the bare SDK: time to first token, CPU and memory per turn.

    TEST_DATABASE_URL=postgresql://... uv run python bench/sdk.py            # N = 1, 4, 8, 16
    TEST_DATABASE_URL=postgresql://... uv run python bench/sdk.py --n 1 4

Each of N sessions runs two turns at once with the others: a first turn (the CLI is spawned:
cold) and a follow-up (the kept-open client: warm). Two ways, in this process, against one
fake upstream (in a thread; its CPU is in the figures of both):
- `bare`: the floor, a few lines of claude-agent-sdk (`ClaudeSDKClient`, `query`,
  `receive_response`), the same options the backend uses but no store, no tools.
- `backend`: `ClaudeSDKBackend.run` with its pool, workspaces, the registry's MCP server and
  the Postgres transcript store (a table of the database at TEST_DATABASE_URL).
TTFT = from the start of the turn to its first text token (the cold one includes the spawn);
CPU = user+system seconds of this process and its children (the CLIs) per turn; RSS = peak
of this process tree, sampled every 50 ms. The backend's in-process cost only: the HTTP/SSE
layer of `copilot serve` is measured by bench/relay.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, StreamEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.backends.builtin_tools import register_builtin_tools  # noqa: E402
from app.backends.claude_sdk.backend import ClaudeSDKBackend  # noqa: E402
from app.backends.events import TextDelta, TurnControl, TurnRequest  # noqa: E402
from app.backends.tools import ToolRegistry  # noqa: E402
from app.config import DatabaseSettings, SdkSettings  # noqa: E402
from app.devtools.fake_upstream import running_fake_upstream  # noqa: E402
from app.store.db import connect_args, migrate  # noqa: E402
from app.store.transcripts import PostgresTranscripts  # noqa: E402
from app.store.turn_rows import TurnRows
from tests.backends.claude_sdk.conftest import _Workspaces, registry_toolset  # noqa: E402

MODEL = "claude-test-1"
PROMPT = "[[fake:text tokens=50 rate=500]]"
Turn = Callable[[str, int], Awaitable[float]]


def bare_env(base_url: str, root: Path, sid: str) -> tuple[dict[str, str], Path]:
    """The floor's environment: what the backend gives the CLI, minus our workspace code."""
    work = root / sid
    (work / "home").mkdir(parents=True)
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "bench",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "HOME": str(work / "home"),
        "CLAUDE_CONFIG_DIR": str(work / "home" / ".claude"),
    }
    return env, work


async def bare_session(base_url: str, root: Path, sid: str) -> list[float]:
    """The floor: two turns on one bare ClaudeSDKClient; their times to first token."""
    env, work = bare_env(base_url, root, sid)
    options = ClaudeAgentOptions(env=env, cwd=str(work), model=MODEL, tools=[],
                                 include_partial_messages=True, setting_sources=[])  # fmt: skip
    times: list[float] = []
    started = time.monotonic()
    async with ClaudeSDKClient(options) as client:
        for _ in range(2):
            await client.query(PROMPT)
            first: float | None = None
            async for message in client.receive_response():
                delta = message.event.get("delta", {}) if isinstance(message, StreamEvent) else {}
                if first is None and delta.get("type") == "text_delta":
                    first = time.monotonic() - started
            times.append(first or float("nan"))
            started = time.monotonic()
    return times


async def backend_session(backend: ClaudeSDKBackend, sid: str) -> list[float]:
    """Two turns of one session through the backend; their times to first token."""
    history: list[dict[str, Any]] = []
    times: list[float] = []
    for _ in range(2):
        history.append({"id": uuid.uuid4().hex, "role": "user",
                        "parts": [{"type": "text", "text": PROMPT}]})  # fmt: skip
        started = time.monotonic()
        first: float | None = None
        request = TurnRequest(sid, str(uuid.uuid4()), list(history), MODEL)
        async for event in backend.run(request, TurnControl()):
            if first is None and isinstance(event, TextDelta):
                first = time.monotonic() - started
        times.append(first or float("nan"))
        history.append({"id": uuid.uuid4().hex, "role": "assistant", "parts": []})
    return times


class Sampler:
    """Peak RSS of this process tree, every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self.me = psutil.Process()

    async def run(self) -> None:
        while True:
            total = 0
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            await asyncio.sleep(0.05)


def cpu_now() -> float:
    """User+system CPU seconds of this process, its reaped children and its live ones."""
    t = os.times()
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        live += times.user + times.system
    return t.user + t.system + t.children_user + t.children_system + live


async def measure(n: int, run_one: Callable[[str], Awaitable[list[float]]]) -> dict[str, float]:
    """N sessions at once; median cold and warm TTFT, CPU per turn, peak RSS."""
    sampler = Sampler()
    sampling = asyncio.create_task(sampler.run())
    cpu = cpu_now()
    results = await asyncio.gather(*(run_one(f"bench-{uuid.uuid4().hex[:10]}") for _ in range(n)))
    sampling.cancel()
    return {
        "cold_ms": statistics.median(r[0] for r in results) * 1000,
        "warm_ms": statistics.median(r[1] for r in results) * 1000,
        "cpu_per_turn_s": (cpu_now() - cpu) / (2 * n),
        "peak_rss_mb": sampler.peak / 2**20,
    }


async def bench_database() -> tuple[str, Callable[[], Awaitable[None]]]:
    """A database migrated for this run on the server at TEST_DATABASE_URL, and its dropper."""
    import asyncpg
    from sqlalchemy.engine import make_url

    server = DatabaseSettings(url=os.environ["TEST_DATABASE_URL"]).url
    assert server is not None
    name = f"copilot_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return url, drop


async def main(ns: list[int]) -> None:
    """Run both ways for each N and print the table."""
    database_url, drop = await bench_database()
    rows: list[tuple[str, int, dict[str, float]]] = []
    with running_fake_upstream() as fake, tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        root = Path(tmp)
        rows = await TurnRows.open(database_url, 8, connect_args(database_url))
        store = PostgresTranscripts(rows.pool)
        registry = ToolRegistry()
        register_builtin_tools(registry)
        try:
            base_url = fake.base_url
            for n in ns:
                bare = await measure(n, lambda sid: bare_session(base_url, root, sid))
                rows.append(("bare", n, bare))
                backend = ClaudeSDKBackend(
                    SdkSettings(max_live=max(ns), max_retries=0),
                    model=MODEL, system_prompt="You are a benchmark.",
                    workspaces=_Workspaces(root / f"ws{n}"), transcripts=store,
                    toolset=registry_toolset(registry), api_key="bench", base_url=fake.base_url,
                )  # fmt: skip

                async def one(sid: str, backend: ClaudeSDKBackend = backend) -> list[float]:
                    await store.pool.execute(
                        "INSERT INTO chat_sessions (id, user_id) VALUES ($1, 'bench')", sid
                    )
                    return await backend_session(backend, sid)

                try:
                    rows.append(("backend", n, await measure(n, one)))
                finally:
                    await backend.close()
        finally:
            await rows.close()
            await drop()
    print(f"{'mode':8} {'N':>3} {'cold TTFT ms':>13} {'warm TTFT ms':>13} "
          f"{'CPU s/turn':>11} {'peak RSS MB':>12}")  # fmt: skip
    for mode, n, r in rows:
        print(f"{mode:8} {n:>3} {r['cold_ms']:>13.0f} {r['warm_ms']:>13.0f} "
              f"{r['cpu_per_turn_s']:>11.3f} {r['peak_rss_mb']:>12.0f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16])
    asyncio.run(main(parser.parse_args().n))
