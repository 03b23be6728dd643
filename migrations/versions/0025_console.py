"""attempt outcomes, console actions, the run list's indexes (issue 24)

What it changes is its own SQL file, ``migrations/sql/0025_console.sql``: step_attempts' end and
outcome (recorded by the rm_attempt_end trigger on step_tasks), each failed attempt's error text in
step_tasks (payload, zoned), the replicated console_actions table, and the run list's indexes. Its
downgrade drops them and regenerates the two tables' replica triggers from the columns left.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.migrations import history

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    history.apply_revision(op.get_bind(), revision)


def downgrade() -> None:
    op.execute("DROP TRIGGER rm_attempt_end ON step_tasks")
    history.revert_functions(op.get_bind(), revision, down_revision or "")
    op.execute("DROP TABLE console_actions")
    for kind in ("ins", "upd", "del"):
        op.execute(f"DROP FUNCTION IF EXISTS rm_conflict_{kind}_console_actions()")
    for index in ("ix_step_attempts_task_id", "ix_workflow_runs_created_at_id", "ix_workflow_runs_status_created_at_id",
                  "ix_workflow_runs_workflow_created_at_id"):
        op.execute(f"DROP INDEX {index}")
    op.execute("ALTER TABLE step_attempts DROP COLUMN ended_at, DROP COLUMN outcome")
    op.execute("ALTER TABLE step_tasks DROP COLUMN attempt_errors")
    for table in ("step_attempts", "step_tasks"):
        op.execute(f"SELECT rm_install_conflict_triggers('{table}'::regclass)")
        op.execute(f"SELECT rm_install_delete_rules('{table}'::regclass)")
