-- 0026: schedules, durable timers and signals (issue 23). schedules (a tenant's cron or interval
-- schedule, its workflow and input: a payload, zoned) and schedule_ticks (what the firing region
-- did last, written apart from the schedule so a tick never races an operator's edit) are fired by
-- the region that places the tenant (workers/ticker.py). run_signals buffers signals to a run until
-- a WaitFor step takes them (a payload, zoned). step_tasks.wake_at is when a waiting step (Sleep,
-- WaitFor) wakes, by the owner's database clock; rm_park_task puts a running task back to
-- 'queued' with no message until then.
-- Downgrade: the tables, the column and the functions are dropped.

CREATE TABLE schedules (
    tenant_id text NOT NULL,
    name text NOT NULL,
    cron text,
    every_s double precision,
    tz text DEFAULT 'UTC' NOT NULL,
    workflow text NOT NULL,
    input jsonb DEFAULT '{}'::jsonb NOT NULL,
    overlap text DEFAULT 'skip' NOT NULL,
    catch_up text DEFAULT 'latest' NOT NULL,
    jitter_s double precision DEFAULT 0 NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    note text,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    zone text DEFAULT '' NOT NULL,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_schedules PRIMARY KEY (tenant_id, name),
    CONSTRAINT uq_schedules_tenant_id_name_zone UNIQUE (tenant_id, name, zone),
    CONSTRAINT ck_schedules_spec CHECK ((cron IS NULL) <> (every_s IS NULL)),
    CONSTRAINT ck_schedules_overlap CHECK (overlap IN ('skip', 'buffer_one', 'allow')),
    CONSTRAINT ck_schedules_catch_up CHECK (catch_up IN ('none', 'latest', 'all'))
);
ALTER TABLE schedules REPLICA IDENTITY USING INDEX uq_schedules_tenant_id_name_zone;

CREATE TABLE schedule_ticks (
    tenant_id text NOT NULL,
    name text NOT NULL,
    last_tick timestamp with time zone,
    last_run_id uuid,
    buffered_tick timestamp with time zone,
    fired_region text,
    fired_at timestamp with time zone,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_schedule_ticks PRIMARY KEY (tenant_id, name)
);

CREATE TABLE run_signals (
    tenant_id text NOT NULL,
    run_id uuid NOT NULL,
    name text NOT NULL,
    key text NOT NULL,
    payload jsonb,
    state text DEFAULT 'pending' NOT NULL,
    reason text,
    delivered_to text,
    received_region text NOT NULL,
    received_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    delivered_at timestamp with time zone,
    zone text DEFAULT '' NOT NULL,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_run_signals PRIMARY KEY (tenant_id, run_id, name, key),
    CONSTRAINT uq_run_signals_tenant_id_run_id_name_key_zone UNIQUE (tenant_id, run_id, name, key, zone),
    CONSTRAINT ck_run_signals_state CHECK (state IN ('pending', 'delivered', 'dead'))
);
ALTER TABLE run_signals REPLICA IDENTITY USING INDEX uq_run_signals_tenant_id_run_id_name_key_zone;
CREATE INDEX ix_run_signals_run_id_name ON run_signals (run_id, name);

ALTER TABLE step_tasks ADD COLUMN wake_at timestamp with time zone;
CREATE INDEX ix_step_tasks_wake_at ON step_tasks (wake_at) WHERE wake_at IS NOT NULL;
-- step_tasks has a new column: its replica triggers are generated again from its columns.
SELECT rm_install_conflict_triggers('step_tasks'::regclass);
SELECT rm_install_delete_rules('step_tasks'::regclass);

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

DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
    ALTER PUBLICATION rm_pub ADD TABLE schedule_ticks;
  END IF;
END $$;
