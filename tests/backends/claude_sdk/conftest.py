"""The claude_sdk backend with the real bundled CLI against the fake upstream, on real Postgres,
with the real workspaces and the registry as its MCP server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from app.backends.builtin_tools import register_builtin_tools
from app.backends.claude_sdk.backend import ClaudeSDKBackend
from app.backends.claude_sdk.mcp_tools import public_tool_name, registry_server
from app.backends.claude_sdk.ports import Toolset
from app.backends.claude_sdk.workspace import Workspaces
from app.backends.events import AgentEvent, TurnControl, TurnRequest
from app.backends.tools import ToolRegistry
from app.config import ContextSettings, SdkSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.db import connect_args
from app.store.transcripts import PostgresTranscripts
from app.store.turn_rows import TurnRows

MODEL = "claude-test-1"


class NapLog:
    """What the slow `nap` tool went through (tests set `started` to a fresh event)."""

    steps: list[str] = []
    started: asyncio.Event | None = None


PREFIX = "mcp__copilot__"


def pytest_configure(config: pytest.Config) -> None:
    """Register the label of tests that drive the bundled Claude Code CLI."""
    config.addinivalue_line("markers", "claude_cli: drives the Claude Code CLI (runs in CI)")


def registry_toolset(registry: ToolRegistry) -> Toolset:
    """The registry as the backend gets it from the factory (no built-in tools)."""
    server, allowed = registry_server(registry)
    return Toolset(server=server, allowed=allowed, public_name=public_tool_name)


@pytest_asyncio.fixture
async def transcripts(database_url: str) -> AsyncIterator[PostgresTranscripts]:
    rows = await TurnRows.open(database_url, 4, connect_args(database_url))
    store = PostgresTranscripts(rows.pool)
    try:
        yield store
    finally:
        await rows.close()


BackendFactory = Callable[..., ClaudeSDKBackend]


@pytest_asyncio.fixture
async def make_backend(
    fake: FakeUpstreamHandle, transcripts: PostgresTranscripts, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    made: list[ClaudeSDKBackend] = []
    registry = ToolRegistry()
    register_builtin_tools(registry)

    @registry.tool
    async def nap(seconds: float) -> str:
        """Wait this many seconds (a slow tool for stop tests)."""
        NapLog.steps.append("started")
        if NapLog.started is not None:
            NapLog.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            NapLog.steps.append("cancelled")
            raise
        NapLog.steps.append("finished")
        return "rested"

    def make(
        root: str = "replica-a", context: ContextSettings | None = None, **overrides: Any
    ) -> ClaudeSDKBackend:
        settings = SdkSettings(
            **{"idle_timeout_s": 30.0, "max_retries": 0, "stop_grace_s": 5.0, **overrides}
        )
        backend = ClaudeSDKBackend(
            settings,
            model=MODEL,
            system_prompt="You are a test assistant.",
            workspaces=Workspaces(tmp_path / root),
            transcripts=transcripts,
            toolset=registry_toolset(registry),
            api_key="test",
            base_url=fake.base_url,
            context=context,
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest_asyncio.fixture
async def session_id(transcripts: PostgresTranscripts) -> str:
    """A chat session row (transcript entries reference it)."""
    sid = f"s-{uuid.uuid4().hex[:12]}"
    await transcripts.pool.execute("INSERT INTO chat_sessions (id, user_id) VALUES ($1, 'u')", sid)
    return sid


def user(text: str, **extra: Any) -> dict[str, Any]:
    """A user UIMessage."""
    return {"id": uuid.uuid4().hex, "role": "user", "parts": [{"type": "text", "text": text}],
            **extra}  # fmt: skip


def request(session_id: str, *history: dict[str, Any]) -> TurnRequest:
    """A turn request of the session with this history."""
    return TurnRequest(session_id, str(uuid.uuid4()), list(history), MODEL)


async def collect(
    backend: ClaudeSDKBackend,
    req: TurnRequest,
    control: TurnControl | None = None,
    into: list[AgentEvent] | None = None,
) -> list[AgentEvent]:
    """Every event of one attempt (also appended to `into` as they come)."""
    events = into if into is not None else []
    async for event in backend.run(req, control or TurnControl()):
        events.append(event)
    return events


class Run:
    """An attempt running in a task; tests wait for the first event of a kind."""

    def __init__(
        self, backend: ClaudeSDKBackend, req: TurnRequest, control: TurnControl | None = None
    ) -> None:
        self.events: list[AgentEvent] = []
        self._seen: dict[type, asyncio.Event] = {}
        self.task = asyncio.create_task(self._run(backend, req, control or TurnControl()))

    async def _run(self, backend: ClaudeSDKBackend, req: TurnRequest, control: TurnControl) -> None:
        async for event in backend.run(req, control):
            self.events.append(event)
            self._event(type(event)).set()

    def _event(self, kind: type) -> asyncio.Event:
        return self._seen.setdefault(kind, asyncio.Event())

    async def seen(self, kind: type) -> None:
        """Wait (30 s at most) until an event of `kind` has come."""
        async with asyncio.timeout(30):
            await self._event(kind).wait()


def cli_processes() -> list[psutil.Process]:
    """Claude Code CLI processes that are children of this test process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "claude" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found
