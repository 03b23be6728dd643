"""replication watch: heartbeat jumps a subscriber received (a slot moved by someone else)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from regionmesh.models import schema_sql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replication_watch",
        sa.Column("subid", sa.BigInteger(), nullable=False),
        sa.Column("publisher", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("gaps", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_gap_from", sa.BigInteger(), nullable=True),
        sa.Column("last_gap_to", sa.BigInteger(), nullable=True),
        sa.Column("last_gap_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subid", "publisher", name=op.f("pk_replication_watch")),
    )
    schema_sql.apply(op.get_bind(), "watch.sql")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS rm_beat_watch ON heartbeats")
    op.execute("DROP FUNCTION IF EXISTS rm_watch_beat()")
    op.drop_table("replication_watch")
