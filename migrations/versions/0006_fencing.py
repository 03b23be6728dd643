"""fencing: a local fence the claim checks

A region that comes back after being down must not execute anything before
replication has told it what moved while it was away. The reconciler keeps a
local (not replicated) fence row; ``rm_claim_task`` claims nothing while it is
up. Ownership does the rest: a claim also requires the run to be owned here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen as this revision created it; the current definition is in models/sql/claims.sql.
CLAIM = r"""
CREATE OR REPLACE FUNCTION rm_claim_task(p_task uuid, p_region text, p_worker text, p_takeover text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  c record;
BEGIN
  IF EXISTS (SELECT 1 FROM local_fence WHERE fenced) THEN
    RETURN NULL;  -- this region is catching up or failed over: execute nothing
  END IF;
  UPDATE step_tasks t
     SET status = 'running', attempt = t.attempt + 1, started_at = clock_timestamp(),
         deadline_at = clock_timestamp() + make_interval(secs => s.timeout_s),
         worker = p_worker, executed_region = p_region, not_before = NULL
    FROM workflow_steps s, workflow_runs r
   WHERE t.id = p_task AND s.id = t.step_id AND r.id = t.run_id
     AND r.status = 'running' AND r.owner_region = p_region AND t.epoch = r.epoch
     AND (t.status = 'queued'
          OR (t.status = 'running' AND (t.deadline_at < clock_timestamp() OR t.worker = p_takeover)))
     AND (t.not_before IS NULL OR t.not_before <= clock_timestamp() + interval '200 milliseconds')
  RETURNING t.id, t.run_id, t.attempt, t.input, t.idx, t.idempotency_key, s.step_key, s.handler,
            s.max_attempts, s.backoff_base_s, s.backoff_max_s, s.timeout_s, r.tenant_id, r.workflow, r.epoch
  INTO c;
  IF c IS NULL THEN RETURN NULL; END IF;
  INSERT INTO step_attempts (id, task_id, run_id, attempt, region, worker, epoch)
  VALUES (md5(c.id::text || ':' || c.attempt || ':' || p_region || ':' || c.epoch)::uuid, c.id, c.run_id, c.attempt,
          p_region, p_worker, c.epoch)
  ON CONFLICT DO NOTHING;
  RETURN to_jsonb(c);
END $$;
"""


# rm_claim_task as 0003 created it, restored by downgrade (frozen: history does not change).
CLAIM_0003 = r"""
CREATE OR REPLACE FUNCTION rm_claim_task(p_task uuid, p_region text, p_worker text, p_takeover text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  c record;
BEGIN
  UPDATE step_tasks t
     SET status = 'running', attempt = t.attempt + 1, started_at = clock_timestamp(),
         deadline_at = clock_timestamp() + make_interval(secs => s.timeout_s),
         worker = p_worker, executed_region = p_region, not_before = NULL
    FROM workflow_steps s, workflow_runs r
   WHERE t.id = p_task AND s.id = t.step_id AND r.id = t.run_id
     AND r.status = 'running' AND r.owner_region = p_region
     AND (t.status = 'queued'
          OR (t.status = 'running' AND (t.deadline_at < clock_timestamp() OR t.worker = p_takeover)))
     AND (t.not_before IS NULL OR t.not_before <= clock_timestamp() + interval '200 milliseconds')
  RETURNING t.id, t.run_id, t.attempt, t.input, t.idx, t.idempotency_key, s.step_key, s.handler,
            s.max_attempts, s.backoff_base_s, s.backoff_max_s, s.timeout_s, r.tenant_id, r.workflow, r.epoch
  INTO c;
  IF c IS NULL THEN RETURN NULL; END IF;
  INSERT INTO step_attempts (id, task_id, run_id, attempt, region, worker, epoch)
  VALUES (md5(c.id::text || ':' || c.attempt || ':' || p_region)::uuid, c.id, c.run_id, c.attempt, p_region,
          p_worker, c.epoch)
  ON CONFLICT DO NOTHING;
  RETURN to_jsonb(c);
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "local_fence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fenced", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_local_fence_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_fence")),
    )
    op.execute("INSERT INTO local_fence (id, fenced) VALUES (1, false)")
    op.execute(CLAIM)


def downgrade() -> None:
    op.execute(CLAIM_0003)
    op.drop_table("local_fence")
