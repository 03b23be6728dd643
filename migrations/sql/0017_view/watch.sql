-- watch.sql: does every change a subscription's slot held reach the subscriber? (0015)
--
-- A region's heartbeat row (heartbeats, written by that region only) goes up by one
-- seq per beat, and logical replication carries every update in commit order. So
-- on a subscriber, each applied update of a publisher's heartbeat is OLD.seq + 1
-- unless changes between them never arrived: someone other than the subscription
-- moved its slot (a replication role streaming from it, pg_replication_slot_advance
-- as a superuser, ALTER SUBSCRIPTION ... SKIP). rm_watch_beat records, per
-- subscription oid and publisher, the last seq received and every jump; the first
-- update a subscription receives only sets the baseline (a new subscription starts
-- wherever its new slot does). A replica trigger, named to run before the conflict
-- trigger, so what was received counts even when the conflict rule keeps the local row.

-- The apply worker runs with an empty search_path: the function carries the tables' schema.
DO $watch$ BEGIN EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.rm_watch_beat() RETURNS trigger LANGUAGE plpgsql
  SET search_path = %1$I, pg_catalog AS $body$
DECLARE
  sub bigint;
  prev bigint;
BEGIN
  SELECT subid::bigint INTO sub FROM pg_stat_subscription WHERE pid = pg_backend_pid() LIMIT 1;
  IF sub IS NULL OR NEW.seq IS NULL THEN
    RETURN NEW;
  END IF;
  SELECT seq INTO prev FROM replication_watch WHERE subid = sub AND publisher = NEW.region FOR UPDATE;
  IF prev IS NULL THEN
    INSERT INTO replication_watch (subid, publisher, seq, seen_at)
    VALUES (sub, NEW.region, NEW.seq, clock_timestamp())
    ON CONFLICT (subid, publisher) DO UPDATE SET seq = EXCLUDED.seq, seen_at = EXCLUDED.seen_at;
  ELSIF NEW.seq = prev + 1 OR NEW.seq <= prev THEN
    UPDATE replication_watch SET seq = greatest(NEW.seq, prev), seen_at = clock_timestamp()
     WHERE subid = sub AND publisher = NEW.region;
  ELSE
    UPDATE replication_watch
       SET seq = NEW.seq, seen_at = clock_timestamp(), gaps = gaps + 1, skipped = skipped + (NEW.seq - prev - 1),
           last_gap_from = prev, last_gap_to = NEW.seq, last_gap_at = clock_timestamp()
     WHERE subid = sub AND publisher = NEW.region;
  END IF;
  RETURN NEW;
EXCEPTION WHEN OTHERS THEN  -- a watch must never stop the link it watches
  RAISE WARNING 'rm_watch_beat: %% (%%)', SQLERRM, SQLSTATE;  -- %% for format()
  RETURN NEW;
END $body$$f$, (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = 'heartbeats'::regclass));
END $watch$;

CREATE OR REPLACE TRIGGER rm_beat_watch BEFORE UPDATE ON heartbeats
  FOR EACH ROW EXECUTE FUNCTION rm_watch_beat();
ALTER TABLE heartbeats ENABLE REPLICA TRIGGER rm_beat_watch;
