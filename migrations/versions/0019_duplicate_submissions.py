"""duplicate_submissions: every later submission found to be an existing run, by submission id

What it changes is its own SQL file, ``migrations/sql/0019_duplicate_submissions.sql``; its
downgrade gets rm_place_run as of 0018 back by revision (``history.revert_functions``).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, "0018")
    op.execute("DROP TABLE duplicate_submissions")
    for kind in ("ins", "upd", "del"):
        op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_{kind}_duplicate_submissions()")
