"""zone membership: the replicated zones table; rm_placement_version covers a zoned tenant's zone

What it changes is its own SQL file, ``migrations/sql/0023_zone_membership.sql``; its downgrade
gets rm_placement_version as of 0022 back by revision (``history.revert_functions``) and drops
the table.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, down_revision or "")
    op.execute("DROP TABLE zones")
    for kind in ("ins", "upd", "del"):
        op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_{kind}_zones()")
