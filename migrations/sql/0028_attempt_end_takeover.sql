-- 0028: a takeover's attempt ends without the task's stale error text (issue 24; fixes 0025).
-- rm_attempt_end recorded the task's error column as the text of every attempt ending as
-- worker_lost; at a takeover (a claim of a task still 'running' under a dead worker on this host)
-- that column still holds an earlier attempt's text, since a claim does not clear it, so the lost
-- attempt showed the previous one's error. Now only a write that ends the task's run (queued
-- again, failed) gives the attempt its text. Same signature and meaning otherwise.
-- Downgrade: rm_attempt_end as of 0025 comes back by revision.

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
