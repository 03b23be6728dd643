"""registry history: one replicated row per change of a tenant's intent

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from regionmesh.models import schema_sql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_registry_history",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("home_region", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                  nullable=False),
        sa.Column("origin_region", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "epoch", name=op.f("pk_tenant_registry_history")),
    )
    # What the registry holds now is the first history row of every tenant that has one.
    op.execute("""INSERT INTO tenant_registry_history (tenant_id, epoch, home_region, reason, note, origin_region)
                  SELECT tenant_id, epoch, home_region, reason, note, origin_region FROM tenant_registry""")
    schema_sql.apply(op.get_bind(), "history.sql")
    op.execute("""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
          ALTER PUBLICATION rm_pub ADD TABLE tenant_registry_history;
        END IF; END $$""")


def downgrade() -> None:
    op.drop_table("tenant_registry_history")
    op.execute("DROP FUNCTION IF EXISTS rm_conflict_ins_tenant_registry_history() CASCADE")
    op.execute("DROP FUNCTION IF EXISTS rm_conflict_upd_tenant_registry_history() CASCADE")
    op.execute("DROP FUNCTION IF EXISTS rm_conflict_del_tenant_registry_history() CASCADE")
