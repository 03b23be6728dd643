-- time.sql: schedules, durable timers and signals (0026). Needs stamp.sql, conflicts.sql,
-- deletes.sql and engine.sql applied first.
--
-- schedules and run_signals hold payloads (a schedule's input, a signal's payload): zone is in
-- their replica identity and stamped on local inserts from tenant_zones, like workflow_runs
-- (payload.sql), so the per-destination publications keep a zoned tenant's rows in its zone.
-- schedule_ticks (what the firing region did last) holds no payload and goes everywhere.

-- Local writes only (origin trigger): a tenant-keyed payload row gets its tenant's zone.
CREATE OR REPLACE FUNCTION rm_zone_stamp_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.zone := coalesce((SELECT zone FROM tenant_zones WHERE tenant_id = NEW.tenant_id AND deleted_at IS NULL), '');
  RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER rm_zone_stamp BEFORE INSERT ON schedules FOR EACH ROW EXECUTE FUNCTION rm_zone_stamp_tenant();
CREATE OR REPLACE TRIGGER rm_zone_stamp BEFORE INSERT ON run_signals FOR EACH ROW EXECUTE FUNCTION rm_zone_stamp_tenant();

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON schedules FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON schedule_ticks FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON run_signals FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('schedules'::regclass);
SELECT rm_install_conflict_triggers('schedule_ticks'::regclass);
SELECT rm_install_conflict_triggers('run_signals'::regclass);
SELECT rm_install_delete_rules('schedules'::regclass);
SELECT rm_install_delete_rules('schedule_ticks'::regclass);
SELECT rm_install_delete_rules('run_signals'::regclass);

-- Park a running task of a waiting step (Sleep, SleepUntil, WaitFor): back to 'queued' with no
-- message anywhere, its attempt given back (a wait is not a try), due at wake_at. wake_at is set
-- by the first park only (p_wake_at, else this database's clock now + p_wait_s) and kept after, so
-- a task woken early (a signal, a re-published message, an adoption) parks again until the same
-- instant. Guarded like a failure (lease, owner, epoch, attempt). Returns wake_at; NULL: discarded.
CREATE OR REPLACE FUNCTION rm_park_task(p_task uuid, p_attempt int, p_wake_at timestamptz, p_wait_s double precision)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
  v_wake timestamptz;
BEGIN
  IF NOT rm_guard_work() THEN RETURN NULL; END IF;
  PERFORM rm_lock_tenant_runs(rm_task_tenant(p_task), false);  -- serialized with an erasure
  UPDATE step_tasks t
     SET status = 'queued', attempt = t.attempt - 1, queued_at = clock_timestamp(), deadline_at = NULL,
         wake_at = coalesce(t.wake_at, p_wake_at, clock_timestamp() + make_interval(secs => p_wait_s)),
         not_before = coalesce(t.wake_at, p_wake_at, clock_timestamp() + make_interval(secs => p_wait_s))
    FROM workflow_runs r
   WHERE t.id = p_task AND t.status = 'running' AND t.attempt = p_attempt AND t.deleted_at IS NULL
     AND r.id = t.run_id AND r.status = 'running' AND t.epoch = r.epoch
     AND r.owner_region = current_setting('regionmesh.region', true)
  RETURNING t.wake_at INTO v_wake;
  RETURN v_wake;
END $$;
