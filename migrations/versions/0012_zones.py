"""zones and erasure receipts: the residency registry

- ``tenant_zones`` (replicated): a tenant's data-residency zone, a registry fact with its own
  epoch, separate from pins (``tenant_registry``).
- ``tenant_erasures`` (replicated): the kept receipt of an erasure, keyed by the SHA-256 of the
  tenant id; while 'erased', the tenant's submissions are refused.
- ``erasure_confirmations`` (replicated): each region's confirmation that it holds no row of an
  erased tenant.
- ``rm_placement_version`` also covers the zone binding and the erasure (lease.sql), so a run is
  never created from a placement computed before either changed.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from regionmesh.models import schema_sql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("tenant_zones", "tenant_erasures", "erasure_confirmations")


def _replicated_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                  nullable=False),
        sa.Column("origin_region", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "tenant_zones",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("zone", sa.Text(), nullable=False),
        *_replicated_columns(),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_zones")),
    )
    op.create_table(
        "tenant_erasures",
        sa.Column("tenant_hash", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("requested_region", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                  nullable=False),
        sa.Column("regions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        *_replicated_columns(),
        sa.CheckConstraint("state IN ('erased', 'enabled')", name=op.f("ck_tenant_erasures_state")),
        sa.PrimaryKeyConstraint("tenant_hash", name=op.f("pk_tenant_erasures")),
    )
    op.create_table(
        "erasure_confirmations",
        sa.Column("tenant_hash", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                  nullable=False),
        sa.Column("rows_removed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        *_replicated_columns(),
        sa.PrimaryKeyConstraint("tenant_hash", "region", name=op.f("pk_erasure_confirmations")),
    )
    schema_sql.apply(op.get_bind(), "lease.sql", "residency.sql")
    # A mesh already replicating publishes the new tables too ('regionmesh migrate' subscribes them).
    op.execute(f"""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
          ALTER PUBLICATION rm_pub ADD TABLE {', '.join(TABLES)};
        END IF; END $$""")


def downgrade() -> None:
    frozen = import_module("regionmesh.migrations.versions.0009_leases")
    schema_sql.run_text(op.get_bind(), frozen.LEASE_0009)
    for table in reversed(TABLES):
        for suffix in ("ins", "upd", "del"):
            op.execute(f'DROP FUNCTION IF EXISTS "rm_conflict_{suffix}_{table}"() CASCADE')
        op.drop_table(table)
