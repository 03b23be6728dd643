"""a released step voids task rows of an older epoch; no claim takes over a task past its deadline

Found by CI's fault campaign (seed 12, a run stuck ``running`` in every region). A run adopted
at failover moves every row the heir holds to the next epoch, but a task row the old owner
wrote just before it died can still arrive afterwards, at the old epoch: inserted (no row of
that key was there), never claimable (claims need the run's epoch), and the heir's release of
that step met it and did nothing. rm_start_step now voids such rows through the delete rule
and inserts fresh ones (engine.sql, ``rm_void_stale_tasks``).

rm_claim_task no longer takes over a running task whose deadline passed by the database's
clock alone (claims.sql): a wall clock that stepped forward made any second message for a
live task run it again. The reconciler re-queues an expired task once both clocks agree.

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
    schema_sql.apply(op.get_bind(), "engine.sql", "claims.sql")


def downgrade() -> None:
    frozen = import_module("regionmesh.migrations.versions.0009_leases")
    bind = op.get_bind()
    schema_sql.run_text(bind, frozen.ENGINE_0009)
    schema_sql.run_text(bind, frozen.CLAIMS_0009)
    op.execute("DROP FUNCTION rm_void_stale_tasks(uuid, uuid, bigint)")
