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
    schema_sql.run_text(op.get_bind(), ENGINE_0009)
    schema_sql.run_text(op.get_bind(), CLAIMS_0009)
    schema_sql.apply(op.get_bind(), "triggers.sql")
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


# engine.sql and claims.sql as this revision applied them (0017 changed both).
ENGINE_0009 = r"""-- engine.sql: the run/step/task state machine. Each transition is one function,
-- one round trip and one transaction: create a run, start a step, complete or
-- fail a task (which may complete its step, release dependents and finish the
-- run), cancel and retry a run. Python decides policy (retry or not, backoff);
-- these functions only move counters and statuses, every one a guarded update.
-- Called from models/runs.py.

CREATE OR REPLACE FUNCTION rm_run_output(p_run uuid) RETURNS jsonb LANGUAGE sql STABLE AS $$
  -- One sink: its output. Several: an object of them by step key.
  SELECT CASE WHEN count(*) = 1 THEN (array_agg(w.output))[1]
              ELSE jsonb_object_agg(w.step_key, w.output) END
  FROM workflow_steps w
  WHERE w.run_id = p_run
    AND NOT EXISTS (SELECT 1 FROM workflow_steps o WHERE o.run_id = p_run AND o.depends_on ? w.step_key)
$$;

CREATE OR REPLACE FUNCTION rm_fail_step(p_step uuid, p_error text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_run uuid;
BEGIN
  UPDATE workflow_steps SET status = 'failed', error = p_error, finished_at = clock_timestamp()
   WHERE id = p_step AND status IN ('waiting', 'queued')
  RETURNING run_id INTO v_run;
  IF v_run IS NULL THEN RETURN; END IF;
  UPDATE workflow_runs SET status = 'failed', error = p_error, finished_at = clock_timestamp()
   WHERE id = v_run AND status = 'running';
  -- In-flight work of the failed run stops: queued tasks never start, running ones are discarded.
  UPDATE step_tasks SET status = 'cancelled' WHERE run_id = v_run AND status IN ('queued', 'running');
  UPDATE workflow_steps SET status = 'cancelled' WHERE run_id = v_run AND status = 'queued';
END $$;

CREATE OR REPLACE FUNCTION rm_start_step(p_step uuid) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
  s workflow_steps%ROWTYPE;
  payload jsonb;
  items jsonb;
  n int;
  dep text;
  path text;
BEGIN
  SELECT * INTO s FROM workflow_steps WHERE id = p_step;
  IF NOT FOUND OR s.status <> 'waiting' OR s.remaining_deps <> 0 THEN RETURN; END IF;
  IF s.map_over IS NULL THEN
    IF jsonb_array_length(s.depends_on) = 0 THEN
      SELECT input INTO payload FROM workflow_runs WHERE id = s.run_id;
    ELSIF jsonb_array_length(s.depends_on) = 1 THEN
      SELECT output INTO payload FROM workflow_steps WHERE run_id = s.run_id AND step_key = s.depends_on->>0;
    ELSE
      SELECT jsonb_object_agg(step_key, coalesce(output, 'null'::jsonb)) INTO payload
        FROM workflow_steps WHERE run_id = s.run_id AND s.depends_on ? step_key;
    END IF;
    UPDATE workflow_steps SET status = 'queued', task_count = 1, remaining_tasks = 1 WHERE id = p_step;
    RETURN QUERY
      INSERT INTO step_tasks (id, run_id, step_id, step_key, idx, idempotency_key, status, input, queued_at, epoch)
      VALUES (md5(s.run_id::text || ':' || s.step_key)::uuid, s.run_id, s.id, s.step_key, NULL,
              s.run_id::text || ':' || s.step_key, 'queued', payload, clock_timestamp(), s.epoch)
      ON CONFLICT (idempotency_key) DO NOTHING
      RETURNING id;
    RETURN;
  END IF;
  dep := split_part(s.map_over, '.', 1);
  path := nullif(substr(s.map_over, length(dep) + 2), '');
  SELECT output INTO items FROM workflow_steps WHERE run_id = s.run_id AND step_key = dep;
  IF path IS NOT NULL THEN items := items -> path; END IF;
  IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
    PERFORM rm_fail_step(p_step, format('step %s maps over %s, which is %s, not a list',
                                        s.step_key, s.map_over, coalesce(jsonb_typeof(items), 'missing')));
    RETURN;
  END IF;
  n := jsonb_array_length(items);
  UPDATE workflow_steps SET status = 'queued', task_count = n, remaining_tasks = n WHERE id = p_step;
  IF n = 0 THEN
    RETURN QUERY SELECT rm_step_succeeded(p_step);
    RETURN;
  END IF;
  RETURN QUERY
    INSERT INTO step_tasks (id, run_id, step_id, step_key, idx, idempotency_key, status, input, queued_at, epoch)
    SELECT md5(s.run_id::text || ':' || s.step_key || ':' || (e.ord - 1))::uuid, s.run_id, s.id, s.step_key,
           (e.ord - 1)::int, s.run_id::text || ':' || s.step_key || ':' || (e.ord - 1), 'queued', e.value,
           clock_timestamp(), s.epoch
      FROM jsonb_array_elements(items) WITH ORDINALITY AS e(value, ord)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id;
END $$;

CREATE OR REPLACE FUNCTION rm_step_succeeded(p_step uuid) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
  s workflow_steps%ROWTYPE;
  out jsonb;
  remaining int;
  d record;
BEGIN
  SELECT * INTO s FROM workflow_steps WHERE id = p_step;
  IF s.map_over IS NULL THEN
    SELECT output INTO out FROM step_tasks WHERE step_id = p_step;
  ELSE
    SELECT coalesce(jsonb_agg(output ORDER BY idx), '[]'::jsonb) INTO out FROM step_tasks WHERE step_id = p_step;
  END IF;
  UPDATE workflow_steps SET status = 'succeeded', output = out, finished_at = clock_timestamp()
   WHERE id = p_step AND status = 'queued';
  IF NOT FOUND THEN RETURN; END IF;
  UPDATE workflow_runs SET remaining_steps = remaining_steps - 1
   WHERE id = s.run_id AND status = 'running'
  RETURNING remaining_steps INTO remaining;
  IF remaining IS NULL THEN RETURN; END IF;
  IF remaining = 0 THEN
    UPDATE workflow_runs SET status = 'succeeded', output = rm_run_output(s.run_id), finished_at = clock_timestamp()
     WHERE id = s.run_id AND status = 'running';
    RETURN;
  END IF;
  FOR d IN
    UPDATE workflow_steps SET remaining_deps = remaining_deps - 1
     WHERE run_id = s.run_id AND status = 'waiting' AND depends_on ? s.step_key
    RETURNING id, remaining_deps
  LOOP
    IF d.remaining_deps = 0 THEN
      RETURN QUERY SELECT rm_start_step(d.id);
    END IF;
  END LOOP;
END $$;

-- NULL: the completion was discarded (a duplicate, a lost race, a cancelled run,
-- a run owned elsewhere or at a newer epoch, no lease here).
-- Otherwise the tasks it released, to be published after commit.
CREATE OR REPLACE FUNCTION rm_complete_task(p_task uuid, p_attempt int, p_output jsonb) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
  v_step uuid;
  remaining int;
BEGIN
  IF NOT rm_may_work() THEN RETURN NULL; END IF;  -- no lease: this region's writes would lose anyway
  UPDATE step_tasks t SET status = 'succeeded', output = p_output, error = NULL, finished_at = clock_timestamp()
    FROM workflow_runs r
   WHERE t.id = p_task AND t.status = 'running' AND t.attempt = p_attempt
     AND r.id = t.run_id AND r.owner_region = current_setting('regionmesh.region', true) AND t.epoch = r.epoch
  RETURNING t.step_id INTO v_step;
  IF v_step IS NULL THEN RETURN NULL; END IF;
  UPDATE workflow_steps SET remaining_tasks = remaining_tasks - 1
   WHERE id = v_step AND status = 'queued'
  RETURNING remaining_tasks INTO remaining;
  IF remaining = 0 THEN
    RETURN coalesce(array(SELECT rm_step_succeeded(v_step)), '{}');
  END IF;
  RETURN '{}';
END $$;

-- p_retry_in NULL: final failure. Returns 'retry', 'failed' or 'discarded'.
CREATE OR REPLACE FUNCTION rm_fail_task(p_task uuid, p_attempt int, p_error text, p_retry_in double precision)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  t record;
BEGIN
  IF NOT rm_may_work() OR NOT EXISTS (
       SELECT 1 FROM step_tasks st JOIN workflow_runs wr ON wr.id = st.run_id
        WHERE st.id = p_task AND wr.owner_region = current_setting('regionmesh.region', true)
          AND st.epoch = wr.epoch) THEN
    RETURN 'discarded';
  END IF;
  IF p_retry_in IS NOT NULL THEN
    UPDATE step_tasks SET status = 'queued', error = p_error, queued_at = clock_timestamp(),
           not_before = clock_timestamp() + make_interval(secs => p_retry_in), deadline_at = NULL
     WHERE id = p_task AND status = 'running' AND attempt = p_attempt;
    RETURN CASE WHEN FOUND THEN 'retry' ELSE 'discarded' END;
  END IF;
  UPDATE step_tasks SET status = 'failed', error = p_error, finished_at = clock_timestamp()
   WHERE id = p_task AND status = 'running' AND attempt = p_attempt
  RETURNING step_id, step_key, idx INTO t;
  IF t IS NULL THEN RETURN 'discarded'; END IF;
  PERFORM rm_fail_step(t.step_id, format('step %s%s failed after %s attempt(s): %s', t.step_key,
                       CASE WHEN t.idx IS NULL THEN '' ELSE '[' || t.idx || ']' END, p_attempt, p_error));
  RETURN 'failed';
END $$;

CREATE OR REPLACE FUNCTION rm_create_run(p_run jsonb, p_steps jsonb) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  v_run uuid;
  v_epoch bigint := coalesce((p_run->>'epoch')::bigint, 1);
  ready uuid[];
BEGIN
  INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, owner_region,
                             submission_id, submitted_region, error, remaining_steps, epoch, finished_at)
  VALUES ((p_run->>'id')::uuid, p_run->>'tenant_id', p_run->>'idempotency_key', p_run->>'workflow',
          p_run->'input', p_run->>'status', p_run->>'owner_region', p_run->>'submission_id',
          p_run->>'submitted_region', p_run->>'error', jsonb_array_length(p_steps), v_epoch,
          CASE WHEN p_run->>'status' = 'running' THEN NULL ELSE clock_timestamp() END)
  ON CONFLICT DO NOTHING
  RETURNING id INTO v_run;
  IF v_run IS NULL THEN RETURN NULL; END IF;  -- the same (tenant, key) was submitted before
  INSERT INTO workflow_steps (id, run_id, step_key, handler, depends_on, remaining_deps, status, map_over,
                              max_attempts, backoff_base_s, backoff_max_s, timeout_s, epoch)
  SELECT md5(v_run::text || ':' || s.key)::uuid, v_run, s.key, s.handler, s.depends_on,
         jsonb_array_length(s.depends_on), 'waiting', s.map_over, s.max_attempts, s.backoff_base_s,
         s.backoff_max_s, s.timeout_s, v_epoch
    FROM jsonb_to_recordset(p_steps) AS s(key text, handler text, depends_on jsonb, map_over text,
         max_attempts int, backoff_base_s double precision, backoff_max_s double precision,
         timeout_s double precision);
  SELECT coalesce(array_agg(t), '{}') INTO ready
    FROM workflow_steps w, LATERAL rm_start_step(w.id) AS t
   WHERE w.run_id = v_run AND w.remaining_deps = 0;
  RETURN ready;
END $$;

CREATE OR REPLACE FUNCTION rm_cancel_run(p_run uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  UPDATE workflow_runs SET status = 'cancelled', finished_at = clock_timestamp(), error = 'cancelled'
   WHERE id = p_run AND status = 'running';
  IF NOT FOUND THEN RETURN false; END IF;
  UPDATE step_tasks SET status = 'cancelled' WHERE run_id = p_run AND status IN ('queued', 'running');
  UPDATE workflow_steps SET status = 'cancelled' WHERE run_id = p_run AND status IN ('waiting', 'queued');
  RETURN true;
END $$;

-- Retry a failed run from its failed (and cancelled) steps; succeeded steps are kept.
CREATE OR REPLACE FUNCTION rm_retry_run(p_run uuid) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  ready uuid[];
  extra uuid[];
BEGIN
  UPDATE workflow_runs SET status = 'running', error = NULL, finished_at = NULL
   WHERE id = p_run AND status = 'failed';
  IF NOT FOUND THEN RETURN NULL; END IF;
  WITH reset AS (
    UPDATE step_tasks SET status = 'queued', attempt = 0, error = NULL, not_before = NULL,
           deadline_at = NULL, queued_at = clock_timestamp()
     WHERE run_id = p_run AND status IN ('failed', 'cancelled')
    RETURNING id, step_id)
  SELECT coalesce(array_agg(id), '{}') INTO ready FROM reset;
  UPDATE workflow_steps w SET status = 'queued', error = NULL, finished_at = NULL,
         remaining_tasks = (SELECT count(*) FROM step_tasks t WHERE t.step_id = w.id AND t.status <> 'succeeded')
   WHERE w.run_id = p_run AND w.status IN ('failed', 'cancelled')
     AND EXISTS (SELECT 1 FROM step_tasks t WHERE t.step_id = w.id);
  -- Steps that failed before they had tasks (a bad map source) start again from their inputs.
  UPDATE workflow_steps SET status = 'waiting', error = NULL, finished_at = NULL
   WHERE run_id = p_run AND status IN ('failed', 'cancelled') AND remaining_deps = 0;
  SELECT coalesce(array_agg(t), '{}') INTO extra
    FROM workflow_steps w, LATERAL rm_start_step(w.id) AS t
   WHERE w.run_id = p_run AND w.status = 'waiting' AND w.remaining_deps = 0;
  RETURN ready || extra;
END $$;

-- Create a run where its tenant is placed, once: only while this region may work
-- (rm_may_work) and the placement inputs are still those the caller computed
-- the placement from (p_version, see rm_placement_version). Serialized with
-- placement writers by rm_lock_placement.
-- {"status": "created", "ready": [...]} | {"status": "duplicate"}
-- | {"status": "no_lease"} | {"status": "moved", "version": ...}
CREATE OR REPLACE FUNCTION rm_place_run(p_run jsonb, p_steps jsonb, p_version text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  v_now text;
  ready uuid[];
BEGIN
  PERFORM rm_lock_placement(p_run->>'tenant_id', false);
  IF NOT rm_may_work() THEN RETURN jsonb_build_object('status', 'no_lease'); END IF;
  v_now := rm_placement_version(p_run->>'tenant_id');
  IF v_now IS DISTINCT FROM p_version THEN
    RETURN jsonb_build_object('status', 'moved', 'version', v_now);
  END IF;
  ready := rm_create_run(p_run, p_steps);
  IF ready IS NULL THEN RETURN jsonb_build_object('status', 'duplicate'); END IF;
  RETURN jsonb_build_object('status', 'created', 'ready', to_jsonb(ready));
END $$;
"""

CLAIMS_0009 = r"""-- claims.sql: claiming a task for execution. rm_claim_task claims nothing while
-- this region may not work (lease.sql: no lease, or fenced), nor a task of a run
-- owned elsewhere or of an older epoch.
-- rm_complete_and_claim completes a task and claims the next one it released
-- in the same transaction (inline continuation). Called from models/runs.py.

-- Claim a queued task (or one held by p_takeover, or past its deadline) for this
-- region's worker; records the attempt. NULL when it is not claimable here:
-- the region is fenced, the run is not running or owned elsewhere, the task
-- belongs to an older epoch of the run, or its backoff has not elapsed.
CREATE OR REPLACE FUNCTION rm_claim_task(p_task uuid, p_region text, p_worker text, p_takeover text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  c record;
BEGIN
  IF NOT rm_may_work() THEN
    RETURN NULL;  -- no lease, or fenced: execute nothing
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

-- Complete a task and claim the first task it released, in one transaction.
-- {"discarded": true} | {"released": [ids not claimed], "claim": {...} | null}
CREATE OR REPLACE FUNCTION rm_complete_and_claim(p_task uuid, p_attempt int, p_output jsonb,
                                                 p_region text, p_worker text, p_claim boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  released uuid[];
  claimed jsonb;
BEGIN
  released := rm_complete_task(p_task, p_attempt, p_output);
  IF released IS NULL THEN RETURN jsonb_build_object('discarded', true); END IF;
  IF p_claim AND cardinality(released) > 0 THEN
    claimed := rm_claim_task(released[1], p_region, p_worker, '');
    IF claimed IS NOT NULL THEN
      released := released[2:];
    END IF;
  END IF;
  RETURN jsonb_build_object('discarded', false, 'released', to_jsonb(released), 'claim', claimed);
END $$;
"""
