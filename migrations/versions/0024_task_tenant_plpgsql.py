"""rm_task_tenant in PL/pgSQL (its plan kept per session; as a SQL function it was planned on every call)

What it changes is its own SQL file, ``migrations/sql/0024_task_tenant_plpgsql.sql``; its downgrade
gets the function as of 0023 back by revision (``history.revert_functions``).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    history.revert_functions(op.get_bind(), revision, down_revision or "")
