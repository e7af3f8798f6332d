"""context ladder: what each attempt did to the context, and compactions of stored histories

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("turn_attempts", sa.Column("reason", sa.String(length=32), nullable=True))
    op.add_column("turn_attempts", sa.Column("tokens_before", sa.Integer(), nullable=True))
    op.add_column("turn_attempts", sa.Column("tokens_after", sa.Integer(), nullable=True))
    op.add_column("turn_attempts", sa.Column("input_tokens", sa.Integer(), nullable=True))
    op.add_column("turn_attempts", sa.Column("output_tokens", sa.Integer(), nullable=True))
    op.create_table(
        "context_compactions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("turn_id", sa.UUID(), nullable=True),
        sa.Column("through_message_id", sa.String(length=128), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("tokens_before", sa.Integer(), nullable=True),
        sa.Column("tokens_after", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_context_compactions_session", "context_compactions", ["session_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_context_compactions_session", table_name="context_compactions")
    op.drop_table("context_compactions")
    op.drop_column("turn_attempts", "output_tokens")
    op.drop_column("turn_attempts", "input_tokens")
    op.drop_column("turn_attempts", "tokens_after")
    op.drop_column("turn_attempts", "tokens_before")
    op.drop_column("turn_attempts", "reason")
