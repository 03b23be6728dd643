-- 0027: fair dispatch (issue 22). A region's queues were FIFO for every tenant: one tenant's batch
-- decided everyone's latency. With fairness on (REGIONMESH_FAIRNESS=on) a region takes its queued
-- tasks tenant by tenant: priority band first (with aging), then the smallest pass (worker-seconds
-- received divided by the weight), FIFO within a tenant; a tenant's concurrency cap and rate limit
-- are checked where the task is taken. tenant_shares (replicated) holds weights and limits; the
-- fair_* tables are local to a region and never published. The trigger on step_tasks keeps
-- fair_queue whether fairness is on or off, so the switch needs no backfill.
-- Downgrade: the functions, the trigger and the tables are dropped.

CREATE TABLE tenant_shares (
    tenant_id text NOT NULL,
    weight double precision DEFAULT 1 NOT NULL,
    max_running integer,
    rate_per_s double precision,
    burst integer,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_tenant_shares PRIMARY KEY (tenant_id),
    CONSTRAINT ck_tenant_shares_weight CHECK (weight > 0),
    CONSTRAINT ck_tenant_shares_max_running CHECK (max_running IS NULL OR max_running > 0),
    CONSTRAINT ck_tenant_shares_rate_per_s CHECK (rate_per_s IS NULL OR rate_per_s > 0),
    CONSTRAINT ck_tenant_shares_burst CHECK (burst IS NULL OR burst > 0)
);

CREATE TABLE fair_queue (
    task_id uuid NOT NULL,
    region text NOT NULL,
    tenant_id text NOT NULL,
    band integer DEFAULT 1 NOT NULL,
    queued_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    not_before timestamp with time zone,
    starts_run boolean DEFAULT false NOT NULL,
    CONSTRAINT pk_fair_queue PRIMARY KEY (task_id)
);
CREATE INDEX ix_fair_queue_head ON fair_queue (region, tenant_id, band DESC, queued_at);

CREATE TABLE fair_tenants (
    region text NOT NULL,
    tenant_id text NOT NULL,
    pass double precision DEFAULT 0 NOT NULL,
    tat timestamp with time zone,
    mean_cost_s double precision DEFAULT 0.01 NOT NULL,
    used_s double precision DEFAULT 0 NOT NULL,
    claims bigint DEFAULT 0 NOT NULL,
    started bigint DEFAULT 0 NOT NULL,
    throttled bigint DEFAULT 0 NOT NULL,
    throttled_by text,
    throttled_at timestamp with time zone,
    CONSTRAINT pk_fair_tenants PRIMARY KEY (region, tenant_id)
);

CREATE TABLE fair_run_bands (
    run_id uuid NOT NULL,
    band integer NOT NULL,
    CONSTRAINT pk_fair_run_bands PRIMARY KEY (run_id),
    CONSTRAINT ck_fair_run_bands_band CHECK (band BETWEEN 0 AND 2)
);

DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
    ALTER PUBLICATION rm_pub ADD TABLE tenant_shares;
  END IF;
END $$;

-- Tasks already queued join the fair queue (a mesh upgraded with work waiting).
INSERT INTO fair_queue (task_id, region, tenant_id, queued_at, not_before, starts_run)
SELECT t.id, r.owner_region, r.tenant_id, coalesce(t.queued_at, clock_timestamp()), t.not_before, t.attempt = 0
  FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id
 WHERE t.status = 'queued' AND t.deleted_at IS NULL
ON CONFLICT DO NOTHING;
INSERT INTO fair_tenants (region, tenant_id) SELECT DISTINCT region, tenant_id FROM fair_queue ON CONFLICT DO NOTHING;

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON tenant_shares FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('tenant_shares'::regclass);
SELECT rm_install_delete_rules('tenant_shares'::regclass);

-- A task entering 'queued' (created ready, released, re-queued, retried, adopted) joins its
-- tenant's queue here; leaving 'queued' leaves it. A tenant that had nothing queued joins at the
-- smallest pass of the tenants that have (it does not bank the time it was idle).
CREATE OR REPLACE FUNCTION rm_fair_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF NEW.status = 'queued' AND NEW.deleted_at IS NULL THEN
    IF TG_OP = 'UPDATE' AND OLD.status = 'queued' AND OLD.not_before IS NOT DISTINCT FROM NEW.not_before THEN
      RETURN NULL;
    END IF;
    SELECT tenant_id, owner_region INTO r FROM workflow_runs WHERE id = NEW.run_id;
    IF r.tenant_id IS NULL THEN RETURN NULL; END IF;
    IF NOT EXISTS (SELECT 1 FROM fair_queue WHERE region = r.owner_region AND tenant_id = r.tenant_id) THEN
      INSERT INTO fair_tenants AS f (region, tenant_id, pass)
      VALUES (r.owner_region, r.tenant_id,
              coalesce((SELECT min(ft.pass) FROM fair_tenants ft
                         WHERE ft.region = r.owner_region
                           AND EXISTS (SELECT 1 FROM fair_queue q
                                        WHERE q.region = ft.region AND q.tenant_id = ft.tenant_id)), 0))
      ON CONFLICT (region, tenant_id) DO UPDATE SET pass = greatest(f.pass, EXCLUDED.pass);
    END IF;
    INSERT INTO fair_queue (task_id, region, tenant_id, band, queued_at, not_before, starts_run)
    VALUES (NEW.id, r.owner_region, r.tenant_id,
            coalesce((SELECT band FROM fair_run_bands WHERE run_id = NEW.run_id), 1), clock_timestamp(),
            NEW.not_before,
            NEW.attempt = 0 AND NOT EXISTS (SELECT 1 FROM step_tasks WHERE run_id = NEW.run_id AND attempt > 0))
    ON CONFLICT (task_id) DO UPDATE SET not_before = EXCLUDED.not_before, region = EXCLUDED.region;
  ELSIF TG_OP = 'UPDATE' AND OLD.status = 'queued' THEN
    DELETE FROM fair_queue WHERE task_id = NEW.id;
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS rm_fair_track ON step_tasks;
CREATE TRIGGER rm_fair_track AFTER INSERT OR UPDATE OF status, not_before, deleted_at ON step_tasks
  FOR EACH ROW EXECUTE FUNCTION rm_fair_track();

-- Take the chosen tenant's next task (highest band, then oldest) for this worker, under the
-- tenant's row lock: its concurrency cap (tasks of the tenant running anywhere, as this region's
-- copy of step_tasks shows them: runs still in flight in an old home after a move count) and its
-- rate limit (GCRA over runs started: a task that starts its run) are checked, and the pass is
-- charged p_estimate_s / weight, at once. p_charge_s is a correction for the tenant's previous
-- claim (actual minus estimate, already divided by nothing: the weight is applied here) and
-- p_used_s the worker-seconds it actually took.
-- {"claim": {...}} | {"claim": null, "blocked": "concurrency"|"rate"|"empty"|"no_lease", "wait_s": s}
CREATE OR REPLACE FUNCTION rm_fair_take(p_region text, p_tenant text, p_worker text, p_estimate_s double precision)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  f record;
  s record;
  q record;
  v_running bigint;
  v_now timestamptz := clock_timestamp();
  v_period double precision;
  claimed jsonb;
BEGIN
  IF coalesce(rm_lease_left() <= interval '0', true) THEN
    RETURN jsonb_build_object('claim', NULL, 'blocked', 'no_lease');
  END IF;
  SELECT * INTO f FROM fair_tenants WHERE region = p_region AND tenant_id = p_tenant FOR UPDATE;
  IF NOT FOUND THEN RETURN jsonb_build_object('claim', NULL, 'blocked', 'empty'); END IF;
  SELECT weight, max_running, rate_per_s, burst INTO s FROM tenant_shares
   WHERE tenant_id = p_tenant AND deleted_at IS NULL;
  IF s.max_running IS NOT NULL THEN
    SELECT count(*) INTO v_running FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id
     WHERE t.status = 'running' AND t.deleted_at IS NULL AND r.tenant_id = p_tenant;
    IF v_running >= s.max_running THEN
      UPDATE fair_tenants SET throttled_by = 'concurrency', throttled_at = v_now, throttled = throttled + 1
       WHERE region = p_region AND tenant_id = p_tenant;
      RETURN jsonb_build_object('claim', NULL, 'blocked', 'concurrency', 'wait_s', 0.05);
    END IF;
  END IF;
  FOR i IN 1..5 LOOP
    SELECT task_id, band, queued_at, starts_run INTO q FROM fair_queue
     WHERE region = p_region AND tenant_id = p_tenant
       AND (not_before IS NULL OR not_before <= v_now + interval '200 milliseconds')
     ORDER BY band DESC, queued_at LIMIT 1;
    IF NOT FOUND THEN RETURN jsonb_build_object('claim', NULL, 'blocked', 'empty'); END IF;
    IF q.starts_run AND s.rate_per_s IS NOT NULL THEN
      v_period := 1.0 / s.rate_per_s;
      IF coalesce(f.tat, '-infinity') - make_interval(secs => (greatest(coalesce(s.burst, 1), 1) - 1) * v_period) > v_now THEN
        UPDATE fair_tenants SET throttled_by = 'rate', throttled_at = v_now, throttled = throttled + 1
         WHERE region = p_region AND tenant_id = p_tenant;
        RETURN jsonb_build_object('claim', NULL, 'blocked', 'rate', 'wait_s',
          extract(epoch FROM coalesce(f.tat, v_now) - make_interval(secs => (greatest(coalesce(s.burst, 1), 1) - 1) * v_period) - v_now));
      END IF;
    END IF;
    claimed := rm_claim_task(q.task_id, p_region, p_worker, '');
    IF claimed IS NOT NULL THEN
      UPDATE fair_tenants
         SET pass = pass + p_estimate_s / greatest(coalesce(s.weight, 1), 0.001),
             tat = CASE WHEN q.starts_run AND s.rate_per_s IS NOT NULL
                        THEN greatest(coalesce(tat, v_now), v_now) + make_interval(secs => 1.0 / s.rate_per_s) ELSE tat END,
             started = started + CASE WHEN q.starts_run THEN 1 ELSE 0 END,
             claims = claims + 1
       WHERE region = p_region AND tenant_id = p_tenant;
      RETURN jsonb_build_object('claim', claimed, 'band', q.band,
                                'waited_s', extract(epoch FROM v_now - q.queued_at));
    END IF;
    -- Not claimable here (cancelled or moved run, older epoch, tombstone): it leaves the queue; a
    -- task that becomes claimable again re-enters through the trigger.
    DELETE FROM fair_queue WHERE task_id = q.task_id;
  END LOOP;
  RETURN jsonb_build_object('claim', NULL, 'blocked', 'empty');
END $$;

-- After a claimed task ran: its worker-seconds (p_used_s) are recorded, and the pass corrected by
-- what the claim's estimate missed (p_used_s - p_estimate_s, divided by the weight); the estimate
-- for the tenant's next claims follows the cost (a moving average).
CREATE OR REPLACE FUNCTION rm_fair_charge(p_region text, p_tenant text, p_used_s double precision,
                                          p_estimate_s double precision) RETURNS void LANGUAGE sql AS $$
  UPDATE fair_tenants f
     SET pass = f.pass + (p_used_s - p_estimate_s) / greatest(coalesce(
                 (SELECT weight FROM tenant_shares WHERE tenant_id = p_tenant AND deleted_at IS NULL), 1), 0.001),
         used_s = f.used_s + p_used_s,
         mean_cost_s = 0.8 * f.mean_cost_s + 0.2 * p_used_s
   WHERE f.region = p_region AND f.tenant_id = p_tenant
$$;
