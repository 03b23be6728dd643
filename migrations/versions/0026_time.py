"""schedules, durable timers and signals: schedules, schedule_ticks, run_signals, step_tasks.wake_at

What it changes is its own SQL file, ``migrations/sql/0026_time.sql``; its downgrade drops the
tables, the column and the functions, and generates step_tasks' replica triggers again.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    for table in ("run_signals", "schedule_ticks", "schedules"):
        op.execute(f"DROP TABLE {table}")
        for kind in ("ins", "upd", "del"):
            op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_{kind}_{table}()")
    op.execute("DROP FUNCTION rm_park_task(uuid, int, timestamptz, double precision)")
    op.execute("DROP FUNCTION rm_zone_stamp_tenant()")
    op.execute("DROP INDEX ix_step_tasks_wake_at")
    op.execute("ALTER TABLE step_tasks DROP COLUMN wake_at")
    op.execute("SELECT rm_install_conflict_triggers('step_tasks'::regclass)")
    op.execute("SELECT rm_install_delete_rules('step_tasks'::regclass)")
