"""leases: a region works only while a majority of the mesh grants it a lease

Adds ``lease_grants`` (replicated: each grantor's acknowledgement of a holder's
latest beat, or that it withheld it and its promise expired), ``local_lease``
(local: until when this region holds its lease), an operator's ``manual`` fence,
the ``failing_over`` region status, and ``rm_may_work()`` / ``rm_place_run()``:
creating, claiming and completing work all require the lease (lease.sql,
engine.sql, claims.sql).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from regionmesh.models import schema_sql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# lease.sql as of this revision (0012 changed rm_placement_version; see schema_sql's docstring).
LEASE_0009 = r"""-- lease.sql: the right to work. A region creates, claims or completes work only
-- while rm_may_work() is true: no fence is up (local_fence: raised by an
-- operator, or while the region is failed over) and its lease keeper holds a
-- lease granted by a majority of the mesh (local_lease.held_until, converted to
-- this server's clock so that it ends no later than the keeper's own bound; see
-- workers/lease_keeper.py). Only this server's clock is read here, never a peer's.

CREATE OR REPLACE FUNCTION rm_may_work() RETURNS boolean LANGUAGE sql VOLATILE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM local_fence WHERE fenced)
     AND EXISTS (SELECT 1 FROM local_lease WHERE id = 1 AND held_until > clock_timestamp())
$$;

-- What a tenant's placement is computed from, as this region's copy holds it:
-- the tenant's registry epoch (0 without a row) and every region's status and
-- epoch. rm_place_run creates a run only while this is what the worker saw.
CREATE OR REPLACE FUNCTION rm_placement_version(p_tenant text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT epoch::text FROM tenant_registry WHERE tenant_id = p_tenant), '0') || '/' ||
         coalesce((SELECT string_agg(name || '=' || status || '@' || epoch, ',' ORDER BY name COLLATE "C") FROM regions), '')
$$;

-- Writers of placement facts (registry rows, region statuses) and rm_place_run
-- serialize on these advisory locks: a run is created either before a change
-- that moves its tenant away (and replicates ahead of it) or not at all.
CREATE OR REPLACE FUNCTION rm_lock_placement(p_tenant text, p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_tenant IS NULL THEN  -- a region status: every tenant's placement may change
    IF p_exclusive THEN PERFORM pg_advisory_xact_lock(hashtext('rm.placement'));
    ELSE PERFORM pg_advisory_xact_lock_shared(hashtext('rm.placement')); END IF;
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(hashtext('rm.placement'));
  IF p_exclusive THEN PERFORM pg_advisory_xact_lock(hashtext('rm.placement:' || p_tenant));
  ELSE PERFORM pg_advisory_xact_lock_shared(hashtext('rm.placement:' || p_tenant)); END IF;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "lease_grants",
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("grantor", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"),
                  nullable=False),
        sa.Column("origin_region", sa.Text(), nullable=False),
        sa.CheckConstraint("state IN ('granting', 'withheld', 'expired')", name=op.f("ck_lease_grants_state")),
        sa.PrimaryKeyConstraint("holder", "grantor", name=op.f("pk_lease_grants")),
    )
    op.create_table(
        "local_lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_by", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_local_lease_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_lease")),
    )
    op.execute("INSERT INTO local_lease (id, reason) VALUES (1, 'no lease yet')")
    op.add_column("local_fence", sa.Column("manual", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.drop_constraint(op.f("ck_regions_status"), "regions", type_="check")
    op.create_check_constraint("status", "regions",
                               "status IN ('active', 'draining', 'failing_over', 'failed_over')")
    schema_sql.run_text(op.get_bind(), LEASE_0009)
    schema_sql.apply(op.get_bind(), "engine.sql", "claims.sql", "triggers.sql")
    # A mesh already replicating publishes the new table too (subscribers pick it up on
    # 'regionmesh replication setup', which refreshes their publications).
    op.execute("""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
          ALTER PUBLICATION rm_pub ADD TABLE lease_grants;
        END IF; END $$""")


def downgrade() -> None:
    from importlib import import_module

    frozen = import_module("regionmesh.migrations.versions.0008_sql_files")
    bind = op.get_bind()
    op.execute("DROP FUNCTION rm_place_run(jsonb, jsonb, text)")
    schema_sql.run_text(bind, frozen.ENGINE_0008)
    schema_sql.run_text(bind, frozen.CLAIMS_0008)
    op.execute("DROP FUNCTION rm_may_work()")
    op.execute("DROP FUNCTION rm_placement_version(text)")
    op.execute("DROP FUNCTION rm_lock_placement(text, boolean)")
    op.execute("DROP FUNCTION IF EXISTS rm_conflict_ins_lease_grants() CASCADE")
    op.execute("DROP FUNCTION IF EXISTS rm_conflict_upd_lease_grants() CASCADE")
    op.drop_table("local_lease")
    op.drop_table("lease_grants")
    op.drop_constraint(op.f("ck_regions_status"), "regions", type_="check")
    op.create_check_constraint("status", "regions", "status IN ('active', 'draining', 'failed_over')")
    op.drop_column("local_fence", "manual")
