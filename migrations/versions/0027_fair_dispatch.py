"""fair dispatch: tenant_shares (replicated weights and limits), the local fair queue and accounts

What it changes is its own SQL file, ``migrations/sql/0027_fair_dispatch.sql``; its downgrade drops
the trigger, the functions and the tables.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    op.execute("DROP TRIGGER rm_fair_track ON step_tasks")
    op.execute("DROP FUNCTION rm_fair_track()")
    op.execute("DROP FUNCTION rm_fair_take(text, text, text, double precision)")
    op.execute("DROP FUNCTION rm_fair_charge(text, text, double precision, double precision)")
    for table in ("fair_run_bands", "fair_tenants", "fair_queue", "tenant_shares"):
        op.execute(f"DROP TABLE {table}")
    for kind in ("ins", "upd", "del"):
        op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_{kind}_tenant_shares()")
