"""replication conflict triggers: apply never stalls, every region converges

Replica-side triggers (ENABLE REPLICA: they fire only in the apply worker) on
every replicated table:

* BEFORE INSERT: the incoming row is written with INSERT ... ON CONFLICT (pk)
  DO UPDATE, so an insert of an existing key becomes an update and no unique
  violation on the key can reach the apply worker;
* BEFORE UPDATE: the incoming version wins only if
  ``(epoch, updated_at, origin_region COLLATE "C")`` is greater than the local
  one's; otherwise it is dropped (RETURN NULL). The comparison is the same in
  every region, so all regions keep the same winner.

Every real conflict (versions from two origins, or a duplicate) is counted in
the local table ``replication_conflicts``. The per-table functions are
generated from the catalog by ``rm_install_conflict_triggers(table)``; a later
migration that changes a replicated table's columns calls it again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPLICATED = ("regions", "tenant_registry", "workflow_runs", "workflow_steps", "step_tasks", "step_attempts", "heartbeats")

GENERATOR = r"""
CREATE OR REPLACE FUNCTION rm_install_conflict_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql AS $gen$
DECLARE
  tname text := (SELECT relname FROM pg_class WHERE oid = p_table);
  -- The apply worker runs with an empty search_path: the functions carry their own.
  nsp text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table);
  pk_cols text[];
  all_cols text[];
  col_list text;
  pk_list text;
  set_list text;
  pk_text text;
BEGIN
  SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
    INTO pk_cols
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
   WHERE i.indrelid = p_table AND i.indisprimary;
  IF pk_cols IS NULL THEN
    RAISE EXCEPTION 'table % has no primary key; replicated tables need one', tname;
  END IF;
  SELECT array_agg(attname::text ORDER BY attnum) INTO all_cols
    FROM pg_attribute WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped;
  SELECT string_agg(quote_ident(c), ', ') INTO col_list FROM unnest(all_cols) AS c;
  SELECT string_agg(quote_ident(c), ', ') INTO pk_list FROM unnest(pk_cols) AS c;
  SELECT string_agg(format('%1$I = EXCLUDED.%1$I', c), ', ') INTO set_list
    FROM unnest(all_cols) AS c WHERE NOT c = ANY (pk_cols);
  SELECT string_agg(format('OLD.%I::text', c), ' || '','' || ') INTO pk_text FROM unnest(pk_cols) AS c;

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql SET search_path = %6$I, pg_catalog AS $body$
    BEGIN
      IF pg_trigger_depth() > 1 THEN
        RETURN NEW;  -- our own upsert below
      END IF;
      INSERT INTO %2$I (%3$s) SELECT (NEW).* ON CONFLICT (%4$s) DO UPDATE SET %5$s;
      RETURN NULL;  -- written above (or resolved by the update trigger)
    END $body$;
  $f$, 'rm_conflict_ins_' || tname, tname, col_list, pk_list, set_list, nsp);

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql SET search_path = %3$I, pg_catalog AS $body$
    DECLARE
      kind text;
      verdict int;
    BEGIN
      verdict := CASE
        WHEN (NEW.epoch, NEW.updated_at, NEW.origin_region COLLATE "C")
           > (OLD.epoch, OLD.updated_at, OLD.origin_region COLLATE "C") THEN 1
        WHEN (NEW.epoch, NEW.updated_at, NEW.origin_region) = (OLD.epoch, OLD.updated_at, OLD.origin_region) THEN 0
        ELSE -1 END;
      IF verdict = 1 AND NEW.origin_region = OLD.origin_region AND pg_trigger_depth() = 1 THEN
        RETURN NEW;  -- the common case: that region's newer version of its own row
      END IF;
      kind := CASE WHEN pg_trigger_depth() > 1 THEN 'insert_exists' ELSE 'update' END
              || CASE verdict WHEN 1 THEN '_won' WHEN 0 THEN '_duplicate' ELSE '_lost' END;
      INSERT INTO replication_conflicts (table_name, pk, kind, local_origin, remote_origin,
                                         local_epoch, remote_epoch, local_updated_at, remote_updated_at)
      VALUES (TG_TABLE_NAME, %2$s, kind, OLD.origin_region, NEW.origin_region,
              OLD.epoch, NEW.epoch, OLD.updated_at, NEW.updated_at);
      IF verdict = 1 THEN
        RETURN NEW;
      END IF;
      RETURN NULL;
    END $body$;
  $f$, 'rm_conflict_upd_' || tname, pk_text, nsp);

  EXECUTE format('DROP TRIGGER IF EXISTS rm_conflict_ins ON %I', tname);
  EXECUTE format('DROP TRIGGER IF EXISTS rm_conflict_upd ON %I', tname);
  EXECUTE format('CREATE TRIGGER rm_conflict_ins BEFORE INSERT ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                 tname, 'rm_conflict_ins_' || tname);
  EXECUTE format('CREATE TRIGGER rm_conflict_upd BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                 tname, 'rm_conflict_upd_' || tname);
  -- Fire only in replica mode, i.e. in the apply worker; local writes are untouched.
  EXECUTE format('ALTER TABLE %I ENABLE REPLICA TRIGGER rm_conflict_ins', tname);
  EXECUTE format('ALTER TABLE %I ENABLE REPLICA TRIGGER rm_conflict_upd', tname);
END $gen$;
"""


def upgrade() -> None:
    op.create_table(
        "replication_conflicts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("pk", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("local_origin", sa.Text(), nullable=True),
        sa.Column("remote_origin", sa.Text(), nullable=True),
        sa.Column("local_epoch", sa.BigInteger(), nullable=True),
        sa.Column("remote_epoch", sa.BigInteger(), nullable=True),
        sa.Column("local_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remote_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replication_conflicts")),
    )
    op.create_index(op.f("ix_replication_conflicts_at"), "replication_conflicts", ["at"], unique=False)
    op.execute(GENERATOR)
    for table in REPLICATED:
        op.execute(f"SELECT rm_install_conflict_triggers('{table}'::regclass)")


def downgrade() -> None:
    for table in REPLICATED:
        op.execute(f"DROP TRIGGER IF EXISTS rm_conflict_ins ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS rm_conflict_upd ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_ins_{table}()")
        op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_upd_{table}()")
    op.execute("DROP FUNCTION IF EXISTS rm_install_conflict_triggers(regclass)")
    op.drop_index(op.f("ix_replication_conflicts_at"), table_name="replication_conflicts")
    op.drop_table("replication_conflicts")
