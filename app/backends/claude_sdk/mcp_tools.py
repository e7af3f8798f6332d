"""The app's ToolRegistry served to the CLI as an in-process SDK MCP server named `copilot`.

The same `Tool` objects as on the anthropic backend, with the same input schema
(`Tool.schema()["input_schema"]`, which the SDK passes through as is and checks with
jsonschema before the handler runs), the same validation (`Tool.call`) and the same rendering
of a result: a string as it is, anything else as compact JSON. A `ToolError` becomes an MCP
error result (`is_error`) carrying its message, which the model reads as an error tool result,
exactly as the anthropic backend sends it.

The CLI keeps an MCP result inline only up to a size; above it the model gets a 2 KB preview
and the path of a file under CLAUDE_CONFIG_DIR (measured with CLI 2.1.330: 20,000 characters
inline, 60,000 persisted), a file the workspace guards keep it from reading. The anthropic
backend sends results whole, so each tool raises that limit to `INLINE_RESULT_CHARS`. A
separate cap in tokens still applies (`MAX_MCP_OUTPUT_TOKENS` in the CLI's environment,
25,000 by default: a 200,000-character result was refused with an error naming a file).

The CLI names these tools `mcp__copilot__<name>`; `public_tool_name` turns that back into the
name the user knows, for the stream and the stored message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from claude_agent_sdk import (
    McpSdkServerConfig,
    SdkMcpTool,
    ToolAnnotations,
    create_sdk_mcp_server,
)

from app.backends.tools import Tool, ToolError, ToolRegistry

SERVER_NAME = "copilot"
PREFIX = f"mcp__{SERVER_NAME}__"
INLINE_RESULT_CHARS = 100_000


def registry_server(registry: ToolRegistry) -> tuple[McpSdkServerConfig, list[str]]:
    """The registry as an SDK MCP server config, and the tool names to allow."""
    tools: list[Tool] = []
    for schema in registry.schemas():
        tool = registry.get(schema["name"])
        if tool is not None:
            tools.append(tool)
    server = create_sdk_mcp_server(
        SERVER_NAME,
        tools=[
            SdkMcpTool(
                t.name,
                t.description,
                t.schema()["input_schema"],
                _handler(t),
                ToolAnnotations(maxResultSizeChars=INLINE_RESULT_CHARS),
            )
            for t in tools
        ],
    )
    return server, [PREFIX + t.name for t in tools]


def public_tool_name(name: str) -> str:
    """The tool's name without the `mcp__copilot__` prefix (other names unchanged)."""
    return name.removeprefix(PREFIX)


def render_output(output: Any) -> str:
    """A tool's result as the text the model gets (a string as is, else compact JSON)."""
    return output if isinstance(output, str) else orjson.dumps(output, default=str).decode()


def _handler(tool: Tool) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def handle(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            output = await tool.call(arguments)
        except ToolError as exc:
            return {"content": [{"type": "text", "text": str(exc)}], "is_error": True}
        return {"content": [{"type": "text", "text": render_output(output)}]}

    return handle
