-- 0025: attempts end with an outcome; console actions are a replicated fact; the run list's indexes
-- (issue 24). step_attempts kept only a claim's start: the console's timeline could not say how an
-- attempt ended, nor that a failover cut one short.
-- - step_attempts.ended_at and .outcome (metadata, replicated everywhere): succeeded, failed,
--   timed_out, worker_lost, superseded (the run moved to a newer epoch: a failover's adoption) or
--   cancelled. rm_attempt_end (a local BEFORE UPDATE trigger on step_tasks, so every path that ends
--   a running task records it: completion, failure, retry, the reconciler's deadline and dead-worker
--   requeue, a takeover, cancel, adoption; the previous release's workers included) closes the
--   task's open attempt of that number and epoch. The adopter writes the old owner's attempt at the
--   new epoch, so it wins over anything the old owner still sends.
-- - step_tasks.attempt_errors: each failed attempt's error text by attempt id (a prefix of 2,000
--   characters). Error text is payload: it lives in step_tasks, published only inside the run's
--   zone and erased with the run's rows, never in step_attempts.
-- - console_actions (replicated): who did what to which target, from which region's console, where
--   it ran and how it ended. A tenant-keyed table: erased with the tenant.
-- - Indexes the console's run list pages by keyset with (created_at, id) over 1,000,000 runs:
--   newest first, by status, by workflow (the tenant's (tenant_id, created_at) index exists); and
--   step_attempts by task, which rm_attempt_end finds the open attempt with.
-- Downgrade: the trigger, its function, the table, the columns and the indexes are dropped.

ALTER TABLE step_attempts ADD COLUMN ended_at timestamp with time zone;
ALTER TABLE step_attempts ADD COLUMN outcome text;
ALTER TABLE step_attempts ADD CONSTRAINT ck_step_attempts_outcome
  CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'worker_lost', 'superseded', 'cancelled'));
ALTER TABLE step_tasks ADD COLUMN attempt_errors jsonb;
SELECT rm_install_conflict_triggers('step_attempts'::regclass);
SELECT rm_install_delete_rules('step_attempts'::regclass);
SELECT rm_install_conflict_triggers('step_tasks'::regclass);
SELECT rm_install_delete_rules('step_tasks'::regclass);

CREATE INDEX ix_step_attempts_task_id ON step_attempts (task_id);
CREATE INDEX ix_workflow_runs_created_at_id ON workflow_runs (created_at, id);
CREATE INDEX ix_workflow_runs_status_created_at_id ON workflow_runs (status, created_at, id);
CREATE INDEX ix_workflow_runs_workflow_created_at_id ON workflow_runs (workflow, created_at, id);

-- How a running task's attempt ended, read from the write that ends it (local writes only: the
-- apply worker never fires it; the attempt row's update replicates). A write that keeps the same
-- attempt running ends nothing; a tombstone (erasure, a stale epoch's task voided) is not an end.
-- A takeover (running again, next attempt) ends the previous one as worker_lost; the texts
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
    WHEN NEW.status = 'running' OR NEW.error LIKE 'worker lost%' THEN 'worker_lost'
    WHEN NEW.error LIKE 'timed out%' THEN 'timed_out'
    ELSE 'failed' END;
  UPDATE step_attempts SET ended_at = clock_timestamp(), outcome = v_outcome, epoch = greatest(epoch, NEW.epoch)
   WHERE id = (SELECT a.id FROM step_attempts a
                WHERE a.task_id = OLD.id AND a.attempt = OLD.attempt AND a.epoch = OLD.epoch
                  AND a.ended_at IS NULL AND a.deleted_at IS NULL
                ORDER BY a.started_at DESC LIMIT 1)
  RETURNING id INTO v_id;
  IF v_id IS NOT NULL AND v_outcome IN ('failed', 'timed_out', 'worker_lost') AND NEW.error IS NOT NULL THEN
    NEW.attempt_errors := coalesce(NEW.attempt_errors, '{}'::jsonb) || jsonb_build_object(v_id::text, left(NEW.error, 2000));
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER rm_attempt_end BEFORE UPDATE ON step_tasks
  FOR EACH ROW WHEN (OLD.status = 'running' AND OLD.deleted_at IS NULL) EXECUTE FUNCTION rm_attempt_end();

CREATE TABLE console_actions (
    id uuid NOT NULL,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    tenant_id text,
    console_region text NOT NULL,
    acted_region text,
    outcome text NOT NULL,
    detail text,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_console_actions PRIMARY KEY (id),
    CONSTRAINT ck_console_actions_outcome CHECK (outcome IN ('done', 'refused', 'error'))
);
CREATE INDEX ix_console_actions_at ON console_actions (at);
CREATE INDEX ix_console_actions_tenant_id ON console_actions (tenant_id);

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON console_actions FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('console_actions'::regclass);
SELECT rm_install_delete_rules('console_actions'::regclass);

DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
    ALTER PUBLICATION rm_pub ADD TABLE console_actions;
  END IF;
END $$;
