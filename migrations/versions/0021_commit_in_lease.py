"""commit in lease: guarded transactions check the lease at commit and bound their lock waits by it

What it changes is its own SQL file, ``migrations/sql/0021_commit_in_lease.sql``; its downgrade
drops the commit trigger and gets the functions as of 0020 back by revision
(``history.revert_functions``).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS rm_lease_at_commit ON step_tasks")
    history.revert_functions(op.get_bind(), revision, "0020")
