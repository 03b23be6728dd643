"""a takeover's attempt ends without the task's stale error text (rm_attempt_end, fixes 0025)

What it changes is its own SQL file, ``migrations/sql/0028_attempt_end_takeover.sql``; its
downgrade gets rm_attempt_end as of 0027 back by revision (``history.revert_functions``).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, down_revision or "")
