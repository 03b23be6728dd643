-- stamp.sql: rm_stamp(), the trigger function that stamps every local write to a
-- replicated table with this region (origin_region) and a strictly growing
-- updated_at: the columns the conflict rule compares. Attached to each replicated
-- table by triggers.sql.

CREATE OR REPLACE FUNCTION rm_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r text := current_setting('regionmesh.region', true);
BEGIN
  -- Local writes only: the apply worker runs in replica mode, where this
  -- (ORIGIN-enabled) trigger does not fire, so replicated rows keep their stamps.
  IF r IS NULL OR r = '' THEN
    RAISE EXCEPTION 'regionmesh.region is not set for this session'
      USING HINT = 'connect through regionmesh, or ALTER DATABASE ... SET regionmesh.region = ''<region>''';
  END IF;
  NEW.origin_region := r;
  IF TG_OP = 'UPDATE' THEN
    -- Strictly later than the version it replaces, even if this clock is behind.
    NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at + interval '1 microsecond');
  ELSE
    NEW.updated_at := clock_timestamp();
  END IF;
  RETURN NEW;
END $$;
