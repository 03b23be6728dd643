"""deletes that obey the conflict rule, TRUNCATE refused, replica triggers that follow the columns

Every replicated table (the tables with the replica conflict triggers) gets
``deleted_at``: a delete is first a tombstone, a version of the row under the
(epoch, updated_at, origin_region) rule, and is removed only once every region
holds it (deletes.sql has the argument). The column change is a change of a
replicated table, so the conflict functions are regenerated from the new
columns in the same transaction; every migration that changes a replicated
table's columns must do the same (``repl.regenerate_replica_triggers``), and
``tests/migration/test_replica_triggers.py`` fails at the revision that does not.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.models import replication as repl
from regionmesh.models import schema_sql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in repl.replicated_tables_in_catalog(bind):
        op.execute(f'ALTER TABLE "{table}" ADD COLUMN deleted_at timestamp with time zone')
    repl.regenerate_replica_triggers(bind)
    schema_sql.apply(bind, "deletes.sql")


def downgrade() -> None:
    bind = op.get_bind()
    tables = repl.replicated_tables_in_catalog(bind)
    for table in tables:
        for trigger in ("rm_conflict_del", "rm_keep_tombstone", "rm_no_truncate"):
            op.execute(f'DROP TRIGGER IF EXISTS {trigger} ON "{table}"')
        op.execute(f'DROP FUNCTION IF EXISTS "rm_conflict_del_{table}"()')
        op.execute(f'ALTER TABLE "{table}" DROP COLUMN deleted_at')
    op.execute("DROP FUNCTION rm_install_delete_rules(regclass)")
    op.execute("DROP FUNCTION rm_keep_tombstone()")
    op.execute("DROP FUNCTION rm_refuse_truncate()")
    repl.regenerate_replica_triggers(bind)
