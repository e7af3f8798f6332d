"""`COPILOT_BACKEND` -> the `Backend` that runs this replica's turns."""

from __future__ import annotations

import anthropic

from app.backends.events import Backend
from app.backends.tools import ToolRegistry
from app.config import Settings


def create_backend(
    settings: Settings, client: anthropic.AsyncAnthropic, tools: ToolRegistry
) -> Backend:
    """The configured backend, on the given Messages API client and tool registry."""
    if settings.turns.backend == "anthropic":
        from app.backends.anthropic_api import AnthropicBackend

        return AnthropicBackend(client, tools, settings.anthropic, settings.turns.max_tool_rounds)
    raise RuntimeError(
        f"COPILOT_BACKEND={settings.turns.backend} is not available yet: use 'anthropic'"
    )
