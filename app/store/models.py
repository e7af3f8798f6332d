"""SQLAlchemy models: sessions, append-only messages, turns, attempts, transcript entries."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


class UsageColumns:
    """Token and cost counters shared by sessions (totals) and turns."""

    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(
        Numeric(14, 6), default=Decimal(0), server_default="0"
    )


class ChatSession(UsageColumns, Base):
    """A conversation owned by one user."""

    __tablename__ = "chat_sessions"
    __table_args__ = (Index("ix_chat_sessions_user_created", "user_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default="{}"
    )
    last_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    active_turn_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # What a message sent during a turn does when its request does not say (None: the
    # server's `COPILOT_ON_CONFLICT`).
    on_conflict: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class QueuedMessage(Base):
    """A user message sent while a turn ran: waiting for its own turn (`kind` "turn"), or to
    join the running turn at its next model call ("steer"). `status`: queued, then started
    (its turn began: `turn_id`), steered (it joined `turn_id`) or cancelled. Arrival order is
    `id`. Moved into `chat_messages` when its turn starts."""

    __tablename__ = "queued_messages"
    __table_args__ = (
        UniqueConstraint("session_id", "message_id", name="uq_queued_messages_session_message"),
        Index(
            "ix_queued_messages_waiting",
            "session_id",
            "id",
            postgresql_where="status = 'queued'",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(128))
    parts: Mapped[list[Any]] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default="{}"
    )
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    turn_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    accepted_by: Mapped[str | None] = mapped_column(String(128))  # the replica that took it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ChatMessage(Base):
    """One UIMessage. Rows are appended; a regenerated reply is marked superseded, not deleted."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("session_id", "seq", name="uq_chat_messages_session_seq"),
        UniqueConstraint("session_id", "message_id", name="uq_chat_messages_session_message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    parts: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default="{}"
    )
    status: Mapped[str] = mapped_column(String(16), default="complete", server_default="complete")
    turn_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Turn(UsageColumns, Base):
    """One run of the agent answering one user message."""

    __tablename__ = "turns"
    __table_args__ = (Index("ix_turns_session_started", "session_id", "started_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    user_message_id: Mapped[str] = mapped_column(String(128))
    assistant_message_id: Mapped[str] = mapped_column(String(128))
    trigger: Mapped[str] = mapped_column(String(32), default="submit-message")
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    replica_id: Mapped[str | None] = mapped_column(String(128))
    context_rung: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    first_token_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # The turn's Langfuse trace (32 hex digits), when tracing is on.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    # The replica that recorded this turn as interrupted because its own replica stopped
    # renewing the session's lease (`app.turns.reaper`).
    reaped_by: Mapped[str | None] = mapped_column(String(128))


class MessageFeedback(Base):
    """A user's rating of an assistant reply: one row per message, replaced on change."""

    __tablename__ = "message_feedback"
    __table_args__ = (
        UniqueConstraint("session_id", "message_id", name="uq_message_feedback_session_message"),
        ForeignKeyConstraint(
            ["session_id", "message_id"],
            ["chat_messages.session_id", "chat_messages.message_id"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(128))
    message_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(255))
    rating: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class TurnAttempt(Base):
    """One attempt of a turn: a retry or a rung of the context ladder."""

    __tablename__ = "turn_attempts"
    __table_args__ = (UniqueConstraint("turn_id", "number", name="uq_turn_attempts_turn_number"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    turn_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    context_rung: Mapped[int] = mapped_column(Integer, default=1)
    error_code: Mapped[str | None] = mapped_column(String(64))
    # Why the attempt ran at its rung ("retry", "prompt_too_long", "proactive"), and the
    # context's estimated tokens before and after the rung made it smaller.
    reason: Mapped[str | None] = mapped_column(String(32))
    tokens_before: Mapped[int | None] = mapped_column(Integer)
    tokens_after: Mapped[int | None] = mapped_column(Integer)
    # Tokens billed for the attempt (input with cache reads and writes; output), a compaction
    # summary that built its context included.
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ContextCompaction(Base):
    """A summary of a session's stored messages up to `through_message_id` (that one
    included): later turns send it instead of those messages. The newest one counts; older
    ones stay as a record."""

    __tablename__ = "context_compactions"
    __table_args__ = (Index("ix_context_compactions_session", "session_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    turn_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    through_message_id: Mapped[str] = mapped_column(String(128))
    summary: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(16))
    tokens_before: Mapped[int | None] = mapped_column(Integer)
    tokens_after: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TranscriptEntry(Base):
    """An append-only entry of a backend session transcript; compaction starts a new generation."""

    __tablename__ = "transcript_entries"
    __table_args__ = (
        UniqueConstraint(
            "session_id", "generation", "seq", name="uq_transcript_entries_session_gen_seq"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(Integer)
    entry: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
