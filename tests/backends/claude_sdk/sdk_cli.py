"""The bundled Claude Code CLI in a session workspace, offline against the fake upstream.

For this package's tests: options like the backend's (per-session HOME/CLAUDE_CONFIG_DIR/
TMPDIR, cwd in the workspace, no setting sources, no nonessential traffic), a client that
checks on the way out that its CLI exited and that `cleanup_leftovers` leaves no socket or
fswatch probe, and readers for what the model was sent.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psutil
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    Message,
    ResultMessage,
    ToolResultBlock,
    UserMessage,
)

from app.backends.claude_sdk.workspace import Workspace
from app.devtools.fake_upstream import FakeUpstreamHandle

TURN_TIMEOUT_S = 90


@contextmanager
def short_root() -> Iterator[Path]:
    """A workspaces root with a short path.

    The CLI makes its `cc-socks/<pid>.sock` only when the path fits a socket address (107
    bytes); under pytest's long `tmp_path` it makes none, and the leftover checks would miss it.
    """
    root = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def cli_options(fake: FakeUpstreamHandle, workspace: Workspace, **extra: Any) -> ClaudeAgentOptions:
    """Options as the backend builds them, pointed at the fake upstream."""
    env = {
        "ANTHROPIC_BASE_URL": fake.base_url,
        "ANTHROPIC_API_KEY": "test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        **workspace.env(),
    }
    extra.setdefault("max_turns", 8)
    return ClaudeAgentOptions(env=env, cwd=str(workspace.path), setting_sources=[], **extra)


def cli_processes() -> list[psutil.Process]:
    """Processes under this one that run the bundled CLI."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("claude" in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def leftovers(workspace: Workspace) -> list[str]:
    """Sockets and fswatch probes in the workspace's TMPDIR."""
    names = [p for p in workspace.tmp.rglob("fswatch-probe-*")]
    names += (
        list((workspace.tmp / "cc-socks").glob("*"))
        if (workspace.tmp / "cc-socks").is_dir()
        else []
    )
    return sorted(str(p.relative_to(workspace.tmp)) for p in names)


@asynccontextmanager
async def cli_client(
    fake: FakeUpstreamHandle, workspace: Workspace, **extra: Any
) -> AsyncIterator[ClaudeSDKClient]:
    """A connected client; on exit, its CLI must be gone and cleanup must leave nothing."""
    before = {p.pid for p in cli_processes()}
    async with (
        asyncio.timeout(TURN_TIMEOUT_S),
        ClaudeSDKClient(cli_options(fake, workspace, **extra)) as client,
    ):
        spawned = [p for p in cli_processes() if p.pid not in before]
        sockets = [workspace.tmp / "cc-socks" / f"{p.pid}.sock" for p in spawned]
        assert [s.exists() for s in sockets] == [True]  # one CLI, and its socket is there
        yield client
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, spawned, 10)
    assert not alive, f"CLI processes left: {alive}"
    workspace.cleanup_leftovers()
    assert leftovers(workspace) == []


async def ask(client: ClaudeSDKClient, prompt: str) -> list[Message]:
    """One turn: the prompt, then every message up to the `ResultMessage`."""
    await client.query(prompt)
    return [message async for message in client.receive_response()]


def result_of(messages: list[Message]) -> ResultMessage:
    """The turn's `ResultMessage`, which must be a success."""
    result = messages[-1]
    assert isinstance(result, ResultMessage)
    assert not result.is_error, result
    return result


def tool_results(messages: list[Message]) -> list[ToolResultBlock]:
    """The tool results the CLI reported in the stream."""
    return [
        block
        for m in messages
        if isinstance(m, UserMessage) and isinstance(m.content, list)
        for block in m.content
        if isinstance(block, ToolResultBlock)
    ]


def sent_tool_results(fake: FakeUpstreamHandle) -> list[dict[str, Any]]:
    """Every distinct `tool_result` block the model was sent, in order of first sending."""
    seen: dict[str, dict[str, Any]] = {}
    for request in fake.requests("/v1/messages"):
        for message in request["json"]["messages"]:
            content = message["content"]
            if not isinstance(content, list):
                continue
            for block in content:
                if block.get("type") == "tool_result":
                    seen.setdefault(block["tool_use_id"], block)
    return list(seen.values())


def text_of(block: dict[str, Any] | ToolResultBlock) -> str:
    """A tool result's content as one string."""
    content = block["content"] if isinstance(block, dict) else block.content
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])
