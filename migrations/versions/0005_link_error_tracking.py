"""replication link error tracking (local)

PostgreSQL counts every apply-worker exit in apply_error_count, a lost
connection to a publisher included, and only a superuser can reset it. So the
count alone cannot say whether a link is erroring *now*: the heartbeat job
(and ``replication status``) record when each subscription's count last grew.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replication_link_stats",
        sa.Column("subscription", sa.Text(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("increased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subscription", name=op.f("pk_replication_link_stats")),
    )


def downgrade() -> None:
    op.drop_table("replication_link_stats")
