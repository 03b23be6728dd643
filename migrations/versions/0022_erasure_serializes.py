"""erasure serializes: completions of a tenant's runs and its erasure take one lock per tenant

What it changes is its own SQL file, ``migrations/sql/0022_erasure_serializes.sql``; its
downgrade gets the functions as of 0021 back by revision and drops the new ones
(``history.revert_functions``).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, "0021")
