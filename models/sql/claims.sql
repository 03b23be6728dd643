-- claims.sql: claiming a task for execution. rm_claim_task claims nothing while
-- this region may not work (lease.sql: no lease, or fenced), nor a task of a run
-- owned elsewhere or of an older epoch.
-- rm_complete_and_claim completes a task and claims the next one it released
-- in the same transaction (inline continuation). Called from models/runs.py.
-- rm_attempt_end records how a claimed attempt ended (0025).
-- rm_guard_work and rm_lease_at_commit bound every transaction that claims,
-- completes, fails or creates work by the lease (0021): its last lease check is
-- at its commit, and no lock wait outlasts the lease.

-- How much lease a guarded transaction must still hold when it makes its last lease check:
-- that check runs at the commit, and the margin covers the commit after it (the WAL flush).
CREATE OR REPLACE FUNCTION rm_commit_margin() RETURNS interval LANGUAGE sql IMMUTABLE AS $$
  SELECT interval '500 milliseconds'
$$;

-- What is left of this region's lease beyond the commit margin (NULL: no lease, or fenced): the
-- lease and the fence as rm_may_work() reads them, with the margin taken off.
CREATE OR REPLACE FUNCTION rm_lease_left() RETURNS interval LANGUAGE sql VOLATILE AS $$
  SELECT held_until - clock_timestamp() - rm_commit_margin() FROM local_lease
   WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM local_fence WHERE fenced)
$$;

-- rm_may_work() for a transaction about to write work (a claim, a completion, a failure, a run):
-- true while no fence is up and more than rm_commit_margin() of the lease is left. It then bounds
-- every later lock wait of the transaction to what is left (lock_timeout, transaction-local), so
-- a claim stuck behind a row lock gives up before the lease ends instead of committing after it,
-- and marks the transaction guarded (regionmesh.guarded), so that rm_lease_at_commit checks the
-- lease again when it commits: after every lock wait, whenever the client sends COMMIT.
CREATE OR REPLACE FUNCTION rm_guard_work() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_left interval := rm_lease_left();
BEGIN
  IF v_left IS NULL OR v_left <= interval '0' THEN
    RETURN false;
  END IF;
  PERFORM set_config('lock_timeout', least(ceil(extract(epoch FROM v_left) * 1000), 86400000)::bigint || 'ms', true);
  PERFORM set_config('regionmesh.guarded', 'on', true);
  RETURN true;
END $$;

-- The last lease check of a guarded transaction, at its commit (a deferred constraint trigger on
-- step_tasks, which every claim, completion, failure and run creation writes). A transaction that
-- waited for a lock, or whose client paused before COMMIT, past held_until minus the margin (or a
-- fence raised meanwhile) is rolled back: SQLSTATE RM001. Checked once per transaction.
CREATE OR REPLACE FUNCTION rm_lease_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('regionmesh.guarded', true) IS DISTINCT FROM 'on' THEN
    RETURN NULL;  -- checked already in this commit
  END IF;
  PERFORM set_config('regionmesh.guarded', 'checked', true);
  IF coalesce(rm_lease_left() <= interval '0', true) THEN
    RAISE EXCEPTION 'this region''s lease ended (or a fence went up) before the transaction could commit'
      USING ERRCODE = 'RM001', HINT = 'the work stays as it was; it is retried once the region holds a lease again';
  END IF;
  RETURN NULL;
END $$;

-- Only transactions marked by rm_guard_work queue the check (the WHEN clause is evaluated at the
-- write); the apply worker (replica mode) never fires it.
DROP TRIGGER IF EXISTS rm_lease_at_commit ON step_tasks;
CREATE CONSTRAINT TRIGGER rm_lease_at_commit AFTER INSERT OR UPDATE ON step_tasks
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (current_setting('regionmesh.guarded', true) = 'on') EXECUTE FUNCTION rm_lease_at_commit();

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

-- How a running task's attempt ended, read from the write that ends it (local writes only: the
-- apply worker never fires it; the attempt row's update replicates). A write that keeps the same
-- attempt running ends nothing; a tombstone (erasure, a stale epoch's task voided) is not an end.
-- A park (a Sleep/WaitFor step back to queued until its wake time, its attempt given back: 0026)
-- ends it as parked (0030). A takeover (running again, next attempt) ends the previous one as worker_lost, with no text (the
-- task's error is still an earlier attempt's: a claim does not clear it); the texts
-- 'worker lost...' and 'timed out...' are the ones workers/ and the reconciler write.
CREATE OR REPLACE FUNCTION rm_attempt_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_outcome text;
  v_id uuid;
BEGIN
  IF NEW.deleted_at IS NOT NULL
     OR (NEW.status = 'running' AND NEW.attempt = OLD.attempt AND NEW.epoch = OLD.epoch) THEN
    RETURN NEW;
  END IF;
  v_outcome := CASE
    WHEN NEW.epoch <> OLD.epoch THEN 'superseded'
    WHEN NEW.status = 'succeeded' THEN 'succeeded'
    WHEN NEW.status = 'cancelled' THEN 'cancelled'
    WHEN NEW.status = 'queued' AND NEW.wake_at IS NOT NULL AND NEW.attempt < OLD.attempt THEN 'parked'
    WHEN NEW.status = 'running' OR NEW.error LIKE 'worker lost%' THEN 'worker_lost'
    WHEN NEW.error LIKE 'timed out%' THEN 'timed_out'
    ELSE 'failed' END;
  UPDATE step_attempts SET ended_at = clock_timestamp(), outcome = v_outcome, epoch = greatest(epoch, NEW.epoch)
   WHERE id = (SELECT a.id FROM step_attempts a
                WHERE a.task_id = OLD.id AND a.attempt = OLD.attempt AND a.epoch = OLD.epoch
                  AND a.ended_at IS NULL AND a.deleted_at IS NULL
                ORDER BY a.started_at DESC LIMIT 1)
  RETURNING id INTO v_id;
  IF v_id IS NOT NULL AND v_outcome IN ('failed', 'timed_out', 'worker_lost') AND NEW.status <> 'running'
     AND NEW.error IS NOT NULL THEN
    NEW.attempt_errors := coalesce(NEW.attempt_errors, '{}'::jsonb) || jsonb_build_object(v_id::text, left(NEW.error, 2000));
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER rm_attempt_end BEFORE UPDATE ON step_tasks
  FOR EACH ROW WHEN (OLD.status = 'running' AND OLD.deleted_at IS NULL) EXECUTE FUNCTION rm_attempt_end();
