"""claim fence: rm_claim_task returns its fencing stamp and the lease; attempt ids include the stamp

What it changes is its own SQL file, ``migrations/sql/0020_claim_fence.sql``; its downgrade gets
rm_claim_task as of 0019 back by revision (``history.revert_functions``).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, "0019")
