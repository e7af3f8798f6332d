"""What the backend needs from outside the package, as protocols: the session workspaces
(`workspace.py`), the transcript store (`app.store.transcripts`, passed in by the factory, so
this package imports only its value type) and the tools and hooks the CLI is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from claude_agent_sdk import HookMatcher, McpSdkServerConfig
from claude_agent_sdk.types import SessionKey, SessionStoreEntry

from app.store.transcripts import TranscriptPosition


class Workspace(Protocol):
    """One session's directories: the CLI's cwd and its HOME, CLAUDE_CONFIG_DIR, TMPDIR."""

    @property
    def path(self) -> Path:
        """The CLI's working directory."""
        ...

    def env(self) -> dict[str, str]:
        """HOME, CLAUDE_CONFIG_DIR and TMPDIR of the session."""
        ...

    def cleanup_leftovers(self) -> None:
        """Remove what a dead CLI left behind (sockets, probe directories)."""
        ...


class Workspaces(Protocol):
    """Every session's workspace under one root."""

    def for_session(self, session_id: str) -> Workspace:
        """The session's workspace, created if needed."""
        ...

    async def remove(self, session_id: str) -> None:
        """Delete the session's workspace."""
        ...


class BoundTranscript(Protocol):
    """A `SessionStore` bound to one session and generation; knows what it has seen."""

    @property
    def position(self) -> TranscriptPosition:
        """What the CLI process using this store has seen of the transcript."""
        ...

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        """Mirror a batch of entries."""
        ...

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        """The bound generation's entries."""
        ...


class Transcripts(Protocol):
    """Every session's stored CLI transcript (`app.store.transcripts.PostgresTranscripts`)."""

    def bind(self, session_id: str, position: TranscriptPosition | None) -> BoundTranscript:
        """A store for the generation at `position`."""
        ...

    def fresh(self, session_id: str, previous: TranscriptPosition | None) -> BoundTranscript:
        """A store for a new generation after `previous`."""
        ...

    async def position(self, session_id: str) -> TranscriptPosition | None:
        """Where the session's newest generation ends."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget the session's transcript."""
        ...

    async def roll_back(self, session_id: str, to: TranscriptPosition) -> None:
        """Forget what was stored after `to` (a failed attempt's entries)."""
        ...


# `hooks.tool_guards` bound to the settings: PreToolUse matchers for one workspace.
HooksFor = Callable[[Path], dict[str, list[HookMatcher]]]


@dataclass(frozen=True, slots=True)
class Toolset:
    """The tools a CLI gets: an in-process MCP server, the names it may call, the built-ins
    enabled, PreToolUse hooks per workspace, and how to show a tool's name to the user."""

    server: McpSdkServerConfig | None = None
    allowed: list[str] = field(default_factory=list)
    builtin: list[str] = field(default_factory=list)
    hooks_for: HooksFor | None = None
    public_name: Callable[[str], str] = field(default=lambda name: name)
