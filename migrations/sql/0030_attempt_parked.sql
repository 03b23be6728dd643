-- 0030: an attempt that parks ends as 'parked', not 'failed' (issue 24 with issue 23's waits).
-- A Sleep, SleepUntil or WaitFor step parks: rm_park_task (0026) puts the running task back to
-- 'queued' until its wake time and gives its attempt back. rm_attempt_end (0025, 0028) read that
-- write as a failure, so the console showed every wait as a failed attempt. Now a write that
-- queues the task again with a wake time and a smaller attempt ends the attempt as 'parked'; the
-- check on step_attempts.outcome allows it.
-- Downgrade: rm_attempt_end as of 0028 comes back by revision; the check as of 0025 is restored
-- (an attempt recorded as parked becomes failed, as before 0030).

ALTER TABLE step_attempts DROP CONSTRAINT ck_step_attempts_outcome;
ALTER TABLE step_attempts ADD CONSTRAINT ck_step_attempts_outcome
  CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'worker_lost', 'superseded', 'cancelled', 'parked'));

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
