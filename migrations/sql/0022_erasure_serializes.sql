-- 0022: an erasure serializes with completions of the tenant's runs (issue 21, item 8). The
-- erasure's tombstone transaction runs one statement per table, each with its own snapshot, and
-- serialized only with run creation: a completion that released (and claimed inline) a task
-- after the step_tasks statement's snapshot left a live task row, with its input, that no later
-- sweep could find (no run row, no tenant id), and the receipt said confirmed.
-- rm_lock_tenant_runs(tenant, exclusive) is a transaction-level advisory lock per tenant:
-- rm_complete_task and rm_fail_task (and rm_cancel_run, rm_retry_run) take it shared before they
-- lock any row; the erasure (models/erasure.py) takes it exclusively before it reads the tenant's
-- runs. A completion that started first commits before the erasure reads anything; one that
-- starts after the tombstones committed finds its task tombstoned: rm_complete_task and
-- rm_claim_task now skip tombstoned tasks (deleted_at), and a tombstoned run is neither cancelled
-- nor retried. Claims take no lock: a claim holding its task's row lock makes the erasure's
-- step_tasks statement wait for it, and the erasure tombstones the attempts again after that.
-- Signatures and results are unchanged: workers of the previous release call these as before.
-- Downgrade: the functions come back as of 0021 by revision; the two new ones are dropped.

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

-- The tenant of the run a task belongs to (NULL: no such task here).
CREATE OR REPLACE FUNCTION rm_task_tenant(p_task uuid) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT r.tenant_id FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id WHERE t.id = p_task
$$;

-- Claim a queued task (or one held by p_takeover: a dead worker on this host) for this
-- region's worker; records the attempt. The result carries the claim's fencing stamp,
-- fence_us: the updated_at this claim wrote into the task's row, in microseconds since 1970
-- (rm_stamp makes every local write of a row strictly later than the version it replaces, and
-- replication never moves it back, so within an epoch every later claim of the task has a
-- larger stamp, across retries, re-queues and 'runs retry'), and lease_until, this region's
-- lease end as the claim read it: the handler's fencing token and lease without a round trip
-- of their own. The attempt's id includes the stamp: 'runs retry' starts attempt over within an
-- epoch, and (task, attempt, region, epoch) alone would collide with the first run's attempt.
-- A running task past its deadline is not taken over here: the reconciler re-queues it once both the database's clock and its own monotonic
-- clock say the deadline passed (workers/deadlines.py), so a wall clock that steps forward
-- hands no live task to a second worker. NULL when it is not claimable here:
-- the region is fenced, the run is not running or owned elsewhere, the task
-- belongs to an older epoch of the run, its backoff has not elapsed, or it is tombstoned (an
-- erasure: a claim that took the row lock first commits before the erasure reads the attempts,
-- one that waited for the erasure's finds the tombstone; models/erasure.py).
CREATE OR REPLACE FUNCTION rm_claim_task(p_task uuid, p_region text, p_worker text, p_takeover text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  c record;
BEGIN
  IF NOT rm_guard_work() THEN
    RETURN NULL;  -- no lease (or too little to commit in), or fenced: execute nothing
  END IF;
  UPDATE step_tasks t
     SET status = 'running', attempt = t.attempt + 1, started_at = clock_timestamp(),
         deadline_at = clock_timestamp() + make_interval(secs => s.timeout_s),
         worker = p_worker, executed_region = p_region, not_before = NULL
    FROM workflow_steps s, workflow_runs r
   WHERE t.id = p_task AND s.id = t.step_id AND r.id = t.run_id
     AND r.status = 'running' AND r.owner_region = p_region AND t.epoch = r.epoch
     AND (t.status = 'queued' OR (t.status = 'running' AND t.worker = p_takeover)) AND t.deleted_at IS NULL
     AND (t.not_before IS NULL OR t.not_before <= clock_timestamp() + interval '200 milliseconds')
  RETURNING t.id, t.run_id, t.attempt, t.input, t.idx, t.idempotency_key, s.step_key, s.handler,
            s.max_attempts, s.backoff_base_s, s.backoff_max_s, s.timeout_s, r.tenant_id, r.workflow, r.epoch,
            (extract(epoch FROM t.updated_at) * 1000000)::bigint AS fence_us
  INTO c;
  IF c IS NULL THEN RETURN NULL; END IF;
  INSERT INTO step_attempts (id, task_id, run_id, attempt, region, worker, epoch)
  VALUES (md5(c.id::text || ':' || c.attempt || ':' || p_region || ':' || c.epoch || ':' || c.fence_us)::uuid, c.id,
          c.run_id, c.attempt, p_region, p_worker, c.epoch)
  ON CONFLICT DO NOTHING;
  RETURN to_jsonb(c) || jsonb_build_object('lease_until', (SELECT held_until FROM local_lease WHERE id = 1));
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
