"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.api.text import Metadata, Text, Title

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
# What a message sent while its session's turn runs does (`POST /chat`'s `on_conflict`).
OnConflict = Literal["reject", "enqueue", "interrupt", "steer"]


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """What went wrong: a stable code and a message a person can act on."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorOut(BaseModel):
    """The envelope of every error answered before a stream starts."""

    error: ErrorDetail


class SessionCreate(BaseModel):
    """Create a session; the id is the server's unless the client brings one."""

    model_config = ConfigDict(extra="forbid")

    id: SessionId | None = None
    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict)
    # The session's policy for a message sent during a turn; None: `COPILOT_ON_CONFLICT`.
    on_conflict: OnConflict | None = None


class SessionPatch(BaseModel):
    """Rename a session, replace its metadata and/or set its `on_conflict` policy.

    A field left out is kept; `title` or `metadata` null is kept too, but `on_conflict` null
    clears the session's policy (the server's `COPILOT_ON_CONFLICT` applies again).
    """

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    metadata: Metadata | None = None
    on_conflict: OnConflict | None = None


class UsageOut(BaseModel):
    """Tokens and cost."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal


class SessionOut(BaseModel):
    """A session as the API shows it."""

    id: str
    title: str | None
    metadata: dict[str, Any]
    # running: a turn runs; queued: none runs yet but messages wait (a moment between turns).
    status: Literal["idle", "running", "queued"]
    active_turn_id: str | None
    # The session's own policy for a message sent during a turn (None: the server's).
    on_conflict: OnConflict | None
    queue_length: int  # messages waiting for their turn (or to steer the running one)
    usage: UsageOut
    created_at: datetime
    updated_at: datetime


class SessionPage(BaseModel):
    """One page of sessions, newest first."""

    sessions: list[SessionOut]
    next_cursor: str | None


class UIMessageOut(BaseModel):
    """An AI SDK `UIMessage`."""

    id: str
    role: str
    parts: list[Any]
    metadata: dict[str, Any]


class MessagePage(BaseModel):
    """Messages oldest first; `has_more` says whether older ones exist (page with `before`)."""

    messages: list[UIMessageOut]
    has_more: bool


class AttemptOut(BaseModel):
    """One attempt of a turn."""

    number: int
    context_rung: int
    reason: str | None = None  # why it ran at its rung: retry, prompt_too_long, proactive
    tokens_before: int | None = None  # the context's estimated tokens before its rung shrank it
    tokens_after: int | None = None
    input_tokens: int | None = None  # billed for the attempt, a summary that built it included
    output_tokens: int | None = None
    error_code: str | None
    started_at: datetime
    finished_at: datetime | None


class TurnOut(BaseModel):
    """A turn: status, timings, backend, model, context rung, attempts, usage, cost, error."""

    id: str
    status: str
    trigger: str
    user_message_id: str
    assistant_message_id: str
    backend: str
    model: str
    context_rung: int
    attempts: int
    attempt_log: list[AttemptOut]
    finish_reason: str | None
    error_code: str | None
    error_message: str | None
    started_at: datetime
    first_token_at: datetime | None
    finished_at: datetime | None
    ttft_ms: int | None
    duration_ms: int | None
    usage: UsageOut
    trace_id: str | None = None  # the turn's Langfuse trace, when tracing is on
    # The replica that recorded this turn as interrupted after its own replica died.
    reaped_by: str | None = None


class TurnList(BaseModel):
    """A session's turns, oldest first."""

    turns: list[TurnOut]


class FeedbackIn(BaseModel):
    """A thumbs up or down on an assistant reply, with an optional comment."""

    model_config = ConfigDict(extra="forbid")

    rating: Literal["up", "down"]
    comment: Annotated[Text, StringConstraints(max_length=2000)] | None = None


class FeedbackOut(BaseModel):
    """The rating stored for a reply."""

    message_id: str
    rating: Literal["up", "down"]
    comment: str | None
    updated_at: datetime


class ReplicaOut(BaseModel):
    """One live replica as it last announced itself."""

    id: str
    host: str
    pid: int
    started_at: datetime
    age_s: float  # seconds since it announced itself
    running_turns: int
    warm_clients: int = 0  # idle Claude Code CLIs kept for their sessions' next turn
    cli_processes: int = 0  # Claude Code CLIs open or closing (busy ones included)
    draining: bool = False


class ReplicaPage(BaseModel):
    """The replicas heard from within three announcement periods, oldest first."""

    this_replica: str
    replicas: list[ReplicaOut]
