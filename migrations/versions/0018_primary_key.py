"""one primary-key lookup: rm_primary_key(table) for the conflict and delete generators

The first revision in the new style: what it changes is its own SQL file,
``migrations/sql/0018_primary_key.sql``; its downgrade gets the generators as of
0017 back by revision (``history.revert_functions``), not from a pasted copy.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, "0017")
