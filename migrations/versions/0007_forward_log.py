"""outbox as a forward log: forwarded submissions are kept until the run shows up here

A submission forwarded to its home region's broker can still be lost with that
broker (the region dies before starting it). The forwarding region keeps it,
marked sent, until the run row arrives by replication; if the tenant's home
changes meanwhile (failover) it is sent to the new home, and if it does not
arrive in time it is sent again (the run id is deterministic: never twice).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("run_id", sa.Uuid(), nullable=True))
    op.add_column("outbox", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_outbox_sent_at"), "outbox", ["sent_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_sent_at"), table_name="outbox")
    op.drop_column("outbox", "sent_at")
    op.drop_column("outbox", "run_id")
