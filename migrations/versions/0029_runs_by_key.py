"""the run list by idempotency key alone: an index on workflow_runs (idempotency_key)

What it changes is its own SQL file, ``migrations/sql/0029_runs_by_key.sql``.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    op.execute("DROP INDEX ix_workflow_runs_idempotency_key")
