"""The fake upstream as the bundled Claude Code CLI sees it, driven through claude-agent-sdk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    Message,
    ResultMessage,
    SystemMessage,
    TextBlock,
    ToolUseBlock,
    create_sdk_mcp_server,
    tool,
)

from app.devtools.fake_upstream import FakeUpstreamHandle

pytestmark = pytest.mark.claude_cli


def _options(fake: FakeUpstreamHandle, tmp_path: Path, **extra: Any) -> ClaudeAgentOptions:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "ANTHROPIC_BASE_URL": fake.base_url,
        "ANTHROPIC_API_KEY": "test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
    }
    return ClaudeAgentOptions(env=env, cwd=str(tmp_path), max_turns=4, **extra)


async def _turn(options: ClaudeAgentOptions, prompt: str) -> list[Message]:
    async with asyncio.timeout(60), ClaudeSDKClient(options) as client:
        await client.query(prompt)
        messages = [message async for message in client.receive_response()]
    return messages


def _result(messages: list[Message]) -> ResultMessage:
    result = messages[-1]
    assert isinstance(result, ResultMessage)
    return result


async def test_cli_gets_a_text_reply(fake: FakeUpstreamHandle, tmp_path: Path) -> None:
    messages = await _turn(_options(fake, tmp_path), "hello from the CLI")
    result = _result(messages)
    assert not result.is_error
    assert result.result == "Echo: hello from the CLI"
    assert result.usage is not None
    assert result.usage["output_tokens"] == 5
    calls = fake.requests("/v1/messages")
    assert calls
    assert all(c["query"] == "beta=true" for c in calls)


async def test_cli_tool_round_trip_through_an_in_process_mcp_tool(
    fake: FakeUpstreamHandle, tmp_path: Path
) -> None:
    seen: list[str] = []

    @tool("lookup", "Look up a value by key", {"key": str})
    async def lookup(args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args["key"])
        return {"content": [{"type": "text", "text": f"value-of-{args['key']}"}]}

    options = _options(
        fake,
        tmp_path,
        mcp_servers={"kv": create_sdk_mcp_server("kv", tools=[lookup])},
        allowed_tools=["mcp__kv__lookup"],
    )
    messages = await _turn(options, '[[fake:tool name=mcp__kv__lookup input={"key": "abc"}]]')
    calls = [
        block
        for m in messages
        if isinstance(m, AssistantMessage)
        for block in m.content
        if isinstance(block, ToolUseBlock)
    ]
    assert [(c.name, c.input) for c in calls] == [("mcp__kv__lookup", {"key": "abc"})]
    assert seen == ["abc"]
    assert _result(messages).result == "Tool result: value-of-abc"


async def test_cli_reports_prompt_too_long(fake: FakeUpstreamHandle, tmp_path: Path) -> None:
    messages = await _turn(_options(fake, tmp_path), "[[fake:text context=100]]")
    result = _result(messages)
    assert result.is_error
    assert result.terminal_reason == "prompt_too_long"
    assert result.api_error_status == 400
    synthetic = [m for m in messages if isinstance(m, AssistantMessage)]
    assert [m.model for m in synthetic] == ["<synthetic>"]
    assert isinstance(synthetic[0].content[0], TextBlock)
    assert "too long" in synthetic[0].content[0].text.lower()


async def test_cli_retries_an_overloaded_upstream(fake: FakeUpstreamHandle, tmp_path: Path) -> None:
    messages = await _turn(_options(fake, tmp_path), "[[fake:error status=529 times=1]] again")
    retries = [m for m in messages if isinstance(m, SystemMessage) and m.subtype == "api_retry"]
    assert [r.data["error_status"] for r in retries] == [529]
    result = _result(messages)
    assert not result.is_error
    assert result.result == "Echo: again"
    assert [c["status"] for c in fake.requests("/v1/messages")] == [529, 200]
