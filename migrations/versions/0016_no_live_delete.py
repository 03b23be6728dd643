"""a local delete of a live replicated row is refused: every delete is a tombstone first

A direct DELETE removed the row in the region that ran it while every peer's
replica delete rule (rm_conflict_del) kept it, so the regions differed until
``verify`` ran. deletes.sql now attaches rm_no_live_delete (BEFORE DELETE,
origin side) to every replicated table: only a tombstone may be removed, which
is the repository path's second step (models/deletes.py).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

from alembic import op

from regionmesh.models import replicated_tables, schema_sql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema_sql.apply(op.get_bind(), "deletes.sql")


def downgrade() -> None:
    bind = op.get_bind()
    for table in replicated_tables.replicated_tables_in_catalog(bind):
        op.execute(f'DROP TRIGGER IF EXISTS rm_no_live_delete ON "{table}"')
    op.execute("DROP FUNCTION rm_refuse_live_delete()")
    frozen = import_module("regionmesh.migrations.versions.0010_deletes")
    schema_sql.run_text(bind, frozen.DELETES_0010)
