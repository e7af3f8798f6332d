"""the reaper: which replica recorded a turn whose own replica died

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("turns", sa.Column("reaped_by", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("turns", "reaped_by")
