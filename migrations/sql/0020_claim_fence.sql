-- 0020: the claim carries its fencing stamp and the lease. rm_claim_task's result (jsonb) gains two
-- keys, fence_us (the updated_at the claim wrote into the task's row, in microseconds since 1970)
-- and lease_until (local_lease.held_until as the claim read it), so a worker builds the handler's
-- fencing token without a round trip after every claim (it read both in a query of its own,
-- models/fencing.py, which cost 10-step chains about a fifth of their throughput). The keys are
-- additive and the signature is unchanged: workers of the previous release call it as before.
-- rm_complete_and_claim returns rm_claim_task's result as is, so its inline claim carries them too.
-- The attempt's id (step_attempts.id) now includes the stamp: 'runs retry' (rm_retry_run) starts
-- attempt over within an epoch, and md5(task, attempt, region, epoch) gave the retried run's claims
-- the ids of the first run's, which ON CONFLICT DO NOTHING then dropped (the history was lost).
-- Downgrade: rm_claim_task as of 0019 comes back by revision.

-- Claim a queued task (or one held by p_takeover: a dead worker on this host) for this
-- region's worker; records the attempt. The result carries the claim's fencing stamp,
-- fence_us: the updated_at this claim wrote into the task's row, in microseconds since 1970
-- (rm_stamp makes every local write of a row strictly later than the version it replaces, and
-- replication never moves it back, so within an epoch every later claim of the task has a
-- larger stamp, across retries, re-queues and 'runs retry'), and lease_until, this region's
-- lease end as the claim read it: the handler's fencing token and lease without a round trip
-- of their own. The attempt's id includes the stamp: 'runs retry' starts attempt over within an
-- epoch, and (task, attempt, region, epoch) alone would collide with the first run's attempt. A running task past its deadline is not taken over
-- here: the reconciler re-queues it once both the database's clock and its own monotonic
-- clock say the deadline passed (workers/deadlines.py), so a wall clock that steps forward
-- hands no live task to a second worker. NULL when it is not claimable here:
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
     AND (t.status = 'queued' OR (t.status = 'running' AND t.worker = p_takeover))
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
