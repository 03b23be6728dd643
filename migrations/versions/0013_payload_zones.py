"""payloads stay in their zone: zone in the replica identity of the payload tables, run_summaries

- ``workflow_runs``, ``workflow_steps``, ``step_tasks`` get ``zone`` ('' for unzoned tenants,
  stamped on local inserts from ``tenant_zones``) and a unique index on ``(id, zone)`` that is
  their replica identity, so a publication may filter them on ``zone`` for updates and deletes.
  ``regionmesh replication setup`` publishes them per destination (``rm_pub_to_<dest>``, filtered
  to '' and the destination's zone) instead of in ``rm_pub``.
- ``run_summaries`` (replicated everywhere): the metadata of zoned runs (payload.sql).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from regionmesh.models import replicated_tables, schema_sql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ZONED = ("workflow_runs", "workflow_steps", "step_tasks")


def upgrade() -> None:
    for table in ZONED:
        op.add_column(table, sa.Column("zone", sa.Text(), server_default=sa.text("''"), nullable=False))
        op.create_unique_constraint(op.f(f"uq_{table}_id_zone"), table, ["id", "zone"])
        op.execute(f'ALTER TABLE "{table}" REPLICA IDENTITY USING INDEX "uq_{table}_id_zone"')
    op.create_table(
        "run_summaries",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("zone", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("owner_region", sa.Text(), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                  nullable=False),
        sa.Column("origin_region", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_summaries")),
    )
    op.create_index(op.f("ix_run_summaries_tenant_id"), "run_summaries", ["tenant_id"], unique=False)
    bind = op.get_bind()
    replicated_tables.regenerate_replica_triggers(bind)
    schema_sql.apply(bind, "payload.sql")
    op.execute("""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
          ALTER PUBLICATION rm_pub ADD TABLE run_summaries;
        END IF; END $$""")


def downgrade() -> None:
    for table in ZONED:
        for trigger in ("rm_zone_stamp", "rm_zone_summary"):
            op.execute(f'DROP TRIGGER IF EXISTS {trigger} ON "{table}"')
    op.execute("DROP FUNCTION rm_zone_stamp()")
    op.execute("DROP FUNCTION rm_zone_summary()")
    for suffix in ("ins", "upd", "del"):
        op.execute(f'DROP FUNCTION IF EXISTS "rm_conflict_{suffix}_run_summaries"() CASCADE')
    op.drop_index(op.f("ix_run_summaries_tenant_id"), table_name="run_summaries")
    op.drop_table("run_summaries")
    for table in ZONED:
        op.execute(f'ALTER TABLE "{table}" REPLICA IDENTITY DEFAULT')
        op.drop_constraint(op.f(f"uq_{table}_id_zone"), table, type_="unique")
        op.drop_column(table, "zone")
    replicated_tables.regenerate_replica_triggers(op.get_bind())
