-- engine.sql: the run/step/task state machine. Each transition is one function,
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

-- Void a step's task rows of an older epoch than the step's: the old owner's, arrived by
-- replication after this region adopted the run (adopt_runs moved every row it held to the
-- new epoch, not rows still on their way). Left alone, such a row could never be claimed
-- (claims need the run's epoch) and the release below would meet it and do nothing: the run
-- would wait forever. The rows go through the delete rule (a tombstone at the new epoch, then
-- the delete) and the release inserts fresh ones, so every region converges whatever order it
-- receives the old owner's insert and these changes in: a region that already holds the old
-- row takes the tombstone (newer epoch), the delete and the insert; one that does not skips
-- the tombstone and the delete and takes the insert, against which the old row, arriving
-- later, loses on its epoch.
CREATE OR REPLACE FUNCTION rm_void_stale_tasks(p_run uuid, p_step uuid, p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM step_tasks WHERE run_id = p_run AND step_id = p_step AND epoch < p_epoch) THEN
    RETURN;  -- the usual case: one probe of the run's tasks
  END IF;
  UPDATE step_tasks SET deleted_at = clock_timestamp(), epoch = p_epoch
   WHERE run_id = p_run AND step_id = p_step AND epoch < p_epoch AND deleted_at IS NULL;
  DELETE FROM step_tasks WHERE run_id = p_run AND step_id = p_step AND deleted_at IS NOT NULL;
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
  PERFORM rm_void_stale_tasks(s.run_id, p_step, s.epoch);
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

-- Completions, failures, cancels and retries of a tenant's runs take this lock shared, before
-- they lock any row; an erasure of the tenant takes it exclusively for its tombstone
-- transaction (models/erasure.py). A completion may release tasks (inserts the erasure's
-- statements, each with its own snapshot, would not see); serialized, a completion either
-- commits before the erasure reads anything, or starts after the tombstones committed and
-- finds its task tombstoned (discarded). Claims do not take it (rm_claim_task).
CREATE OR REPLACE FUNCTION rm_lock_tenant_runs(p_tenant text, p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_tenant IS NULL THEN RETURN; END IF;
  IF p_exclusive THEN PERFORM pg_advisory_xact_lock(hashtext('rm.runs:' || p_tenant));
  ELSE PERFORM pg_advisory_xact_lock_shared(hashtext('rm.runs:' || p_tenant)); END IF;
END $$;

-- The tenant of the run a task belongs to (NULL: no such task here). PL/pgSQL keeps its query's
-- plan for the session; as a SQL function (0022) its join was planned again on every call.
CREATE OR REPLACE FUNCTION rm_task_tenant(p_task uuid) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_tenant text;
BEGIN
  SELECT r.tenant_id INTO v_tenant FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id WHERE t.id = p_task;
  RETURN v_tenant;
END $$;

-- NULL: the completion was discarded (a duplicate, a lost race, a cancelled run,
-- a run owned elsewhere or at a newer epoch, no lease here, the tenant erased).
-- Otherwise the tasks it released, to be published after commit.
CREATE OR REPLACE FUNCTION rm_complete_task(p_task uuid, p_attempt int, p_output jsonb) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
  v_step uuid;
  remaining int;
BEGIN
  IF NOT rm_guard_work() THEN RETURN NULL; END IF;  -- no lease: this region's writes would lose anyway
  PERFORM rm_lock_tenant_runs(rm_task_tenant(p_task), false);  -- serialized with an erasure
  UPDATE step_tasks t SET status = 'succeeded', output = p_output, error = NULL, finished_at = clock_timestamp()
    FROM workflow_runs r
   WHERE t.id = p_task AND t.status = 'running' AND t.attempt = p_attempt AND t.deleted_at IS NULL
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
  IF NOT rm_guard_work() THEN RETURN 'discarded'; END IF;
  PERFORM rm_lock_tenant_runs(rm_task_tenant(p_task), false);  -- serialized with an erasure
  IF NOT EXISTS (
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
  PERFORM rm_lock_tenant_runs((SELECT tenant_id FROM workflow_runs WHERE id = p_run), false);
  UPDATE workflow_runs SET status = 'cancelled', finished_at = clock_timestamp(), error = 'cancelled'
   WHERE id = p_run AND status = 'running' AND deleted_at IS NULL;
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
  PERFORM rm_lock_tenant_runs((SELECT tenant_id FROM workflow_runs WHERE id = p_run), false);
  UPDATE workflow_runs SET status = 'running', error = NULL, finished_at = NULL
   WHERE id = p_run AND status = 'failed' AND deleted_at IS NULL;
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

-- A later submission found to be the run ``p_run`` names (same tenant and idempotency key):
-- recorded once per submission id, where it was found. The submission that created the run
-- (workflow_runs.submission_id) and one without an id are not recorded.
CREATE OR REPLACE FUNCTION rm_record_duplicate(p_run jsonb) RETURNS void LANGUAGE sql AS $$
  INSERT INTO duplicate_submissions (run_id, submission_id, tenant_id, region)
  SELECT r.id, p_run->>'submission_id', r.tenant_id, current_setting('regionmesh.region', true)
    FROM workflow_runs r
   WHERE r.tenant_id = p_run->>'tenant_id' AND r.idempotency_key = p_run->>'idempotency_key'
     AND p_run->>'submission_id' IS NOT NULL AND r.submission_id IS DISTINCT FROM p_run->>'submission_id'
  ON CONFLICT DO NOTHING
$$;

-- Create a run where its tenant is placed, once: only while this region may work
-- (rm_guard_work, checked again at the commit) and the placement inputs are still those
-- the caller computed the placement from (p_version, see rm_placement_version). Serialized with
-- placement writers by rm_lock_placement. A duplicate is recorded (rm_record_duplicate).
-- {"status": "created", "ready": [...]} | {"status": "duplicate"}
-- | {"status": "no_lease"} | {"status": "moved", "version": ...}
CREATE OR REPLACE FUNCTION rm_place_run(p_run jsonb, p_steps jsonb, p_version text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  v_now text;
  ready uuid[];
BEGIN
  PERFORM rm_lock_placement(p_run->>'tenant_id', false);
  IF NOT rm_guard_work() THEN RETURN jsonb_build_object('status', 'no_lease'); END IF;
  v_now := rm_placement_version(p_run->>'tenant_id');
  IF v_now IS DISTINCT FROM p_version THEN
    RETURN jsonb_build_object('status', 'moved', 'version', v_now);
  END IF;
  ready := rm_create_run(p_run, p_steps);
  IF ready IS NULL THEN
    PERFORM rm_record_duplicate(p_run);
    RETURN jsonb_build_object('status', 'duplicate');
  END IF;
  RETURN jsonb_build_object('status', 'created', 'ready', to_jsonb(ready));
END $$;
