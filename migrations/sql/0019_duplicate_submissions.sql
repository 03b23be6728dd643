-- 0019: duplicate_submissions, the product's record of every later submission found to be an
-- existing run (same tenant and idempotency key), so that every acknowledged submission can be
-- accounted for by its id: it created its run (workflow_runs.submission_id), it was found to
-- duplicate one (a row here, replicated to every region), or it was dead-lettered with a reason
-- (dead_letters.submission_id). rm_place_run records the duplicate in the same transaction that
-- found it; its signature and results are unchanged, so workers of the previous release call it
-- as before (and record duplicates too).
-- Downgrade: rm_place_run as of 0018 comes back by revision; the table and rm_record_duplicate
-- are dropped.

CREATE TABLE duplicate_submissions (
    run_id uuid NOT NULL,
    submission_id text NOT NULL,
    tenant_id text NOT NULL,
    region text NOT NULL,
    seen_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_duplicate_submissions PRIMARY KEY (run_id, submission_id)
);
CREATE INDEX ix_duplicate_submissions_submission_id ON duplicate_submissions (submission_id);

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON duplicate_submissions
  FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('duplicate_submissions'::regclass);
SELECT rm_install_delete_rules('duplicate_submissions'::regclass);

DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
    ALTER PUBLICATION rm_pub ADD TABLE duplicate_submissions;
  END IF;
END $$;

-- A later submission found to be the run ``p_run`` names (same tenant and idempotency key):
-- recorded once per submission id, where it was found. The submission that created the run
-- (workflow_runs.submission_id) and one without an id are not recorded.
CREATE OR REPLACE FUNCTION rm_record_duplicate(p_run jsonb) RETURNS void LANGUAGE sql AS $$
  INSERT INTO duplicate_submissions (run_id, submission_id, tenant_id, region)
  SELECT r.id, p_run->>'submission_id', r.tenant_id, current_setting('regionmesh.region', true)
    FROM workflow_runs r
   WHERE r.tenant_id = p_run->>'tenant_id' AND r.idempotency_key = p_run->>'idempotency_key'
     AND p_run->>'submission_id' IS NOT NULL AND r.submission_id IS DISTINCT FROM p_run->>'submission_id'
  ON CONFLICT DO NOTHING
$$;

-- Create a run where its tenant is placed, once: only while this region may work
-- (rm_may_work) and the placement inputs are still those the caller computed
-- the placement from (p_version, see rm_placement_version). Serialized with
-- placement writers by rm_lock_placement. A duplicate is recorded (rm_record_duplicate).
-- {"status": "created", "ready": [...]} | {"status": "duplicate"}
-- | {"status": "no_lease"} | {"status": "moved", "version": ...}
CREATE OR REPLACE FUNCTION rm_place_run(p_run jsonb, p_steps jsonb, p_version text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  v_now text;
  ready uuid[];
BEGIN
  PERFORM rm_lock_placement(p_run->>'tenant_id', false);
  IF NOT rm_may_work() THEN RETURN jsonb_build_object('status', 'no_lease'); END IF;
  v_now := rm_placement_version(p_run->>'tenant_id');
  IF v_now IS DISTINCT FROM p_version THEN
    RETURN jsonb_build_object('status', 'moved', 'version', v_now);
  END IF;
  ready := rm_create_run(p_run, p_steps);
  IF ready IS NULL THEN
    PERFORM rm_record_duplicate(p_run);
    RETURN jsonb_build_object('status', 'duplicate');
  END IF;
  RETURN jsonb_build_object('status', 'created', 'ready', to_jsonb(ready));
END $$;
