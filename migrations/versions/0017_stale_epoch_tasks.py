"""a released step replaces a task row of an older epoch (the stuck run campaign seed 12 found)

A run adopted at failover moves every row the heir holds to the next epoch. A task row
the old owner wrote just before it died can still arrive afterwards, at the old epoch:
it is inserted (no row of that key is there), nothing can claim it (claims need the
run's epoch), and when the heir released that step its insert met the stale row and
did nothing, so the run waited forever. rm_start_step (engine.sql) now replaces a
task row of an older epoch. Rows already stuck that way in runs this region owns are
queued again at the run's epoch here (the reconciler publishes them).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

from alembic import op

from regionmesh.models import schema_sql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    schema_sql.apply(bind, "engine.sql")
    op.execute("""UPDATE step_tasks t
                     SET epoch = r.epoch, status = 'queued', worker = NULL, deadline_at = NULL, not_before = NULL,
                         output = NULL, finished_at = NULL, queued_at = clock_timestamp(),
                         attempt = CASE WHEN t.status = 'running' THEN greatest(t.attempt - 1, 0) ELSE t.attempt END,
                         error = format('a task of epoch %s replaced (migration 0017)', t.epoch)
                    FROM workflow_runs r, workflow_steps s
                   WHERE r.id = t.run_id AND s.id = t.step_id AND r.status = 'running'
                     AND r.owner_region = current_setting('regionmesh.region', true)
                     AND t.epoch < r.epoch AND s.epoch = r.epoch AND s.status IN ('queued', 'running')""")


def downgrade() -> None:
    frozen = import_module("regionmesh.migrations.versions.0009_leases")
    schema_sql.run_text(op.get_bind(), frozen.ENGINE_0009)
