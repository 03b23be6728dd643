-- payload.sql: payloads stay in their zone (data residency, 0013).
--
-- workflow_runs, workflow_steps and step_tasks hold a run's payload (input,
-- outputs, error texts). Each row carries zone: '' for unzoned tenants, else the
-- zone its tenant was bound to when the run was created (tenant_zones), copied
-- to its steps and tasks. zone is part of the replica identity (unique index on
-- (id, zone)), so each publisher's per-destination publication rm_pub_to_<dest>
-- can filter these tables on it for updates and deletes too: a zoned row never
-- leaves the publisher toward a region outside its zone (PostgreSQL enforces it,
-- models/replication.py ensure_zoned_publication). The metadata of zoned runs
-- (ids, tenant, workflow, status, owner, epoch, step states, times) goes to every
-- region through run_summaries, written by the owner's local writes.
-- Needs stamp.sql, conflicts.sql and deletes.sql applied first.

-- Local writes only (origin trigger): replicated rows keep the zone they were created with.
CREATE OR REPLACE FUNCTION rm_zone_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'workflow_runs' THEN
    NEW.zone := coalesce((SELECT zone FROM tenant_zones WHERE tenant_id = NEW.tenant_id AND deleted_at IS NULL), '');
  ELSE
    NEW.zone := coalesce((SELECT zone FROM workflow_runs WHERE id = NEW.run_id), '');
  END IF;
  RETURN NEW;
END $$;

-- The metadata of a zoned run, for every region (local writes only).
CREATE OR REPLACE FUNCTION rm_zone_summary() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.zone = '' THEN RETURN NULL; END IF;
  IF TG_TABLE_NAME = 'workflow_runs' THEN
    IF TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.owner_region = NEW.owner_region
       AND OLD.epoch = NEW.epoch AND OLD.deleted_at IS NOT DISTINCT FROM NEW.deleted_at THEN
      RETURN NULL;
    END IF;
    INSERT INTO run_summaries (run_id, tenant_id, workflow, zone, status, owner_region, steps, created_at,
                               finished_at, epoch, deleted_at)
    VALUES (NEW.id, NEW.tenant_id, NEW.workflow, NEW.zone, NEW.status, NEW.owner_region, '{}'::jsonb,
            NEW.created_at, NEW.finished_at, NEW.epoch, NEW.deleted_at)
    ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, owner_region = EXCLUDED.owner_region,
           finished_at = EXCLUDED.finished_at, epoch = greatest(run_summaries.epoch, EXCLUDED.epoch),
           deleted_at = EXCLUDED.deleted_at;
  ELSIF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
    UPDATE run_summaries SET steps = steps || jsonb_build_object(NEW.step_key, NEW.status),
                             epoch = greatest(epoch, NEW.epoch)
     WHERE run_id = NEW.run_id;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER rm_zone_stamp BEFORE INSERT ON workflow_runs FOR EACH ROW EXECUTE FUNCTION rm_zone_stamp();
CREATE OR REPLACE TRIGGER rm_zone_stamp BEFORE INSERT ON workflow_steps FOR EACH ROW EXECUTE FUNCTION rm_zone_stamp();
CREATE OR REPLACE TRIGGER rm_zone_stamp BEFORE INSERT ON step_tasks FOR EACH ROW EXECUTE FUNCTION rm_zone_stamp();
CREATE OR REPLACE TRIGGER rm_zone_summary AFTER INSERT OR UPDATE ON workflow_runs FOR EACH ROW EXECUTE FUNCTION rm_zone_summary();
CREATE OR REPLACE TRIGGER rm_zone_summary AFTER INSERT OR UPDATE ON workflow_steps FOR EACH ROW EXECUTE FUNCTION rm_zone_summary();

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON run_summaries FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('run_summaries'::regclass);
SELECT rm_install_delete_rules('run_summaries'::regclass);
