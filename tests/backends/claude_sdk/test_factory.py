"""COPILOT_BACKEND=claude_sdk through the factory, with the real workspace, hooks and MCP tools."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from app.backends.builtin_tools import register_builtin_tools
from app.backends.claude_sdk.backend import ClaudeSDKBackend
from app.backends.events import Finished, ToolResult
from app.backends.factory import create_backend
from app.backends.tools import ToolRegistry
from app.config import SdkSettings, Settings, TurnSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.transcripts import PostgresTranscripts
from tests.backends.claude_sdk.conftest import collect, request, user

pytestmark = pytest.mark.claude_cli


def test_claude_sdk_needs_a_transcript_store() -> None:
    settings = Settings(turns=TurnSettings(backend="claude_sdk"))
    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="transcript store"):
        create_backend(settings, client, ToolRegistry())


def test_a_bad_denied_bash_pattern_fails_at_start_up(transcripts: PostgresTranscripts) -> None:
    settings = Settings(
        turns=TurnSettings(backend="claude_sdk"),
        sdk=SdkSettings(builtin_tools="Bash", denied_bash=["(unclosed"]),
    )
    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="unclosed|pattern"):
        create_backend(settings, client, ToolRegistry(), transcripts=transcripts)


async def test_the_factory_builds_a_backend_that_answers_with_the_registry_tools(
    fake: FakeUpstreamHandle,
    transcripts: PostgresTranscripts,
    session_id: str,
    tmp_path: Path,
) -> None:
    settings = Settings(
        turns=TurnSettings(backend="claude_sdk"),
        sdk=SdkSettings(workspaces_dir=tmp_path / "ws", max_retries=0),
    )
    registry = ToolRegistry()
    register_builtin_tools(registry)
    client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url)
    backend = create_backend(settings, client, registry, transcripts=transcripts)
    assert isinstance(backend, ClaudeSDKBackend)
    assert backend.context is settings.context  # one place for the models' windows
    try:
        prompt = '[[fake:tool name=mcp__copilot__calculate input={"expression": "2+3"}]]'
        events = await collect(backend, request(session_id, user(prompt)))
    finally:
        await backend.close()
    assert events[-1] == Finished("stop")
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(results) == 1
    assert results[0].error is None
