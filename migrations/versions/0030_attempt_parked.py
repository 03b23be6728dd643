"""an attempt that parks ends as 'parked', not 'failed'

What it changes is its own SQL file, ``migrations/sql/0030_attempt_parked.sql``; its downgrade gets
rm_attempt_end as of 0029 back by revision (``history.revert_functions``) and restores 0025's check.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    op.execute("UPDATE step_attempts SET outcome = 'failed' WHERE outcome = 'parked'")
    op.execute("ALTER TABLE step_attempts DROP CONSTRAINT ck_step_attempts_outcome")
    op.execute("ALTER TABLE step_attempts ADD CONSTRAINT ck_step_attempts_outcome CHECK (outcome IN "
               "('succeeded', 'failed', 'timed_out', 'worker_lost', 'superseded', 'cancelled'))")
    history.revert_functions(op.get_bind(), revision, down_revision or "")
