"""`COPILOT_BACKEND` -> the `Backend` that runs this replica's turns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anthropic

from app.backends.events import Backend
from app.backends.tools import ToolRegistry
from app.config import Settings

if TYPE_CHECKING:
    from app.backends.claude_sdk.ports import Transcripts


def create_backend(
    settings: Settings,
    client: anthropic.AsyncAnthropic,
    tools: ToolRegistry,
    *,
    transcripts: Transcripts | None = None,
) -> Backend:
    """The configured backend, on the given Messages API client (its key and base URL are the
    CLI's too), tool registry and, for `claude_sdk`, transcript store
    (`app.store.transcripts.PostgresTranscripts`, opened and closed by the caller)."""
    if settings.turns.backend == "anthropic":
        from app.backends.anthropic_api import AnthropicBackend
        from app.backends.anthropic_http import MessagesHttp

        return AnthropicBackend(
            MessagesHttp(client), tools, settings.anthropic, settings.turns.max_tool_rounds
        )
    if settings.turns.backend == "claude_sdk":
        if transcripts is None:
            raise RuntimeError("COPILOT_BACKEND=claude_sdk needs a transcript store")
        return _claude_sdk(settings, client, tools, transcripts)
    raise RuntimeError(f"COPILOT_BACKEND={settings.turns.backend} is not a backend")


def _claude_sdk(
    settings: Settings,
    client: anthropic.AsyncAnthropic,
    tools: ToolRegistry,
    transcripts: Transcripts,
) -> Backend:
    from pathlib import Path

    from claude_agent_sdk import HookMatcher

    from app.backends.claude_sdk.backend import ClaudeSDKBackend
    from app.backends.claude_sdk.hooks import DEFAULT_DENIED_BASH, tool_guards
    from app.backends.claude_sdk.mcp_tools import public_tool_name, registry_server
    from app.backends.claude_sdk.ports import Toolset
    from app.backends.claude_sdk.workspace import Workspaces

    sdk = settings.sdk
    server, allowed = registry_server(tools)
    builtin = sdk.builtin_tool_names

    denied_bash = [*DEFAULT_DENIED_BASH, *sdk.denied_bash]
    tool_guards(Path("/"), denied_bash=denied_bash, max_subagents=0)  # a bad pattern fails now

    def hooks_for(workspace: Path) -> dict[str, list[HookMatcher]]:
        guards: dict[str, list[HookMatcher]] = tool_guards(
            workspace, denied_bash=denied_bash, max_subagents=sdk.max_subagents
        )
        return guards

    toolset = Toolset(
        server=server if len(tools) else None,
        allowed=allowed,
        builtin=builtin,
        hooks_for=hooks_for if builtin else None,
        public_name=public_tool_name,
    )
    # A short absolute root: the CLI's socket path (under each workspace's TMPDIR) must fit
    # in 107 bytes, or the CLI silently makes none.
    root = sdk.workspaces_root(settings.server.data_dir).resolve()
    return ClaudeSDKBackend(
        sdk,
        model=settings.anthropic.model,
        system_prompt=settings.anthropic.system_prompt,
        workspaces=Workspaces(root),
        transcripts=transcripts,
        toolset=toolset,
        api_key=client.api_key,
        base_url=str(client.base_url).rstrip("/"),
        max_tool_rounds=settings.turns.max_tool_rounds,
        context=settings.context,
    )
