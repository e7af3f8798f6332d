"""The ToolRegistry as the in-process MCP server `copilot`: over MCP, and through the real CLI."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from claude_agent_sdk import AssistantMessage, ToolUseBlock
from mcp import Client
from mcp.types import CallToolResult, TextContent

from app.backends.builtin_tools import register_builtin_tools
from app.backends.claude_sdk.mcp_tools import public_tool_name, registry_server
from app.backends.claude_sdk.workspace import Workspaces
from app.backends.tools import ToolError, ToolRegistry
from app.devtools.fake_upstream import FakeUpstreamHandle, running_fake_upstream
from tests.backends.claude_sdk.sdk_cli import (
    ask,
    cli_client,
    result_of,
    sent_tool_results,
    short_root,
    text_of,
    tool_results,
)


@pytest.fixture
def registry() -> ToolRegistry:
    """The built-in tools plus one that always fails."""
    tools = ToolRegistry()
    register_builtin_tools(tools)

    @tools.tool
    def explode(reason: str) -> str:
        """Always fails."""
        raise ToolError(f"exploded: {reason}")

    return tools


@pytest.fixture
def workspaces() -> Iterator[Workspaces]:
    """Workspaces under a short root, so that the CLI makes its socket."""
    with short_root() as root:
        yield Workspaces(root)


@pytest.fixture
def fake() -> Iterator[FakeUpstreamHandle]:
    """A fake upstream for one test."""
    with running_fake_upstream() as handle:
        yield handle


def _text(result: CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


def test_public_tool_name_strips_only_the_copilot_prefix() -> None:
    assert public_tool_name("mcp__copilot__calculate") == "calculate"
    assert public_tool_name("calculate") == "calculate"
    assert public_tool_name("mcp__other__calculate") == "mcp__other__calculate"
    assert public_tool_name("Read") == "Read"


def test_server_is_named_copilot_and_allows_every_registry_tool(registry: ToolRegistry) -> None:
    server, allowed = registry_server(registry)
    assert server["type"] == "sdk"
    assert server["name"] == "copilot"
    assert allowed == [
        "mcp__copilot__get_current_time",
        "mcp__copilot__calculate",
        "mcp__copilot__explode",
    ]


async def test_tools_are_listed_with_the_registry_schema(registry: ToolRegistry) -> None:
    server, _ = registry_server(registry)
    async with Client(server["instance"]) as client:
        listed = (await client.list_tools()).tools
    by_name = {t.name: t for t in listed}
    assert list(by_name) == ["get_current_time", "calculate", "explode"]
    calculate = registry.get("calculate")
    assert calculate is not None
    assert by_name["calculate"].input_schema == calculate.schema()["input_schema"]
    assert by_name["calculate"].description == calculate.description


async def test_a_call_returns_the_result_as_json_text(registry: ToolRegistry) -> None:
    server, _ = registry_server(registry)
    async with Client(server["instance"]) as client:
        result = await client.call_tool("calculate", {"expression": "6*7"})
    assert not result.is_error
    assert orjson.loads(_text(result)) == {"expression": "6*7", "result": 42.0}


async def test_a_tool_error_is_an_error_result_with_its_message(registry: ToolRegistry) -> None:
    server, _ = registry_server(registry)
    async with Client(server["instance"]) as client:
        failed = await client.call_tool("explode", {"reason": "on purpose"})
        bad = await client.call_tool("calculate", {"expression": "__import__('os')"})
    assert failed.is_error
    assert _text(failed) == "exploded: on purpose"
    assert bad.is_error
    assert _text(bad) == "only numbers and + - * / // % ** ( ) are allowed"


async def test_invalid_arguments_are_an_error_result(registry: ToolRegistry) -> None:
    server, _ = registry_server(registry)
    async with Client(server["instance"]) as client:
        result = await client.call_tool("calculate", {"expression": "1", "extra": 2})
    assert result.is_error


async def test_cli_calls_calculate_through_the_registry_and_the_model_gets_42(
    fake: FakeUpstreamHandle, registry: ToolRegistry, workspaces: Workspaces
) -> None:
    workspace = workspaces.for_session("mcp-round-trip")
    server, allowed = registry_server(registry)
    async with cli_client(
        fake, workspace, tools=[], allowed_tools=allowed, mcp_servers={"copilot": server}
    ) as client:
        messages = await ask(
            client, '[[fake:tool name=mcp__copilot__calculate input={"expression": "6*7"}]]'
        )
    calls = [
        b
        for m in messages
        if isinstance(m, AssistantMessage)
        for b in m.content
        if isinstance(b, ToolUseBlock)
    ]
    assert [(c.name, c.input) for c in calls] == [
        ("mcp__copilot__calculate", {"expression": "6*7"})
    ]
    [streamed] = tool_results(messages)
    assert not streamed.is_error
    [sent] = sent_tool_results(fake)
    assert not sent.get("is_error")
    assert orjson.loads(text_of(sent)) == {"expression": "6*7", "result": 42.0}
    assert result_of(messages).result == f"Tool result: {text_of(sent)}"
    offered = fake.requests("/v1/messages")[0]["json"]["tools"]
    # The CLI adds a `DeferredToolPlaceholder` (defer_loading) to keep deferred loading active.
    assert sorted(t["name"] for t in offered if not t.get("defer_loading")) == sorted(allowed)


async def test_cli_with_only_registry_tools_refuses_a_builtin(
    fake: FakeUpstreamHandle, registry: ToolRegistry, workspaces: Workspaces
) -> None:
    workspace = workspaces.for_session("no-builtins")
    marker = workspace.path / "bash-ran"
    server, allowed = registry_server(registry)
    async with cli_client(
        fake, workspace, tools=[], allowed_tools=allowed, mcp_servers={"copilot": server}
    ) as client:
        messages = await ask(
            client, f'[[fake:tool name=Bash input={{"command": "touch {marker}"}}]]'
        )
    [streamed] = tool_results(messages)
    assert streamed.is_error
    assert "No such tool available: Bash" in text_of(streamed)
    assert not marker.exists()
    [sent] = sent_tool_results(fake)
    assert sent["is_error"] is True
    assert (result_of(messages).result or "").startswith("Tool error:")


async def test_a_large_result_reaches_the_model_inline(
    fake: FakeUpstreamHandle, workspaces: Workspaces
) -> None:
    registry = ToolRegistry()

    @registry.tool
    def report(size: int) -> str:
        """A long report."""
        return "word " * (size // 5)

    workspace = workspaces.for_session("large-result")
    server, allowed = registry_server(registry)
    async with cli_client(
        fake, workspace, tools=[], allowed_tools=allowed, mcp_servers={"copilot": server}
    ) as client:
        messages = await ask(
            client, '[[fake:tool name=mcp__copilot__report input={"size": 60000}]]'
        )
    result_of(messages)
    [sent] = sent_tool_results(fake)
    assert text_of(sent) == "word " * 12000
