-- deletes.sql: deletes and truncates of replicated tables obey the conflict rule.
--
-- A delete is a version of the row like any update: the one repository path
-- (models/deletes.py) first sets deleted_at (a tombstone, stamped by rm_stamp
-- with this region and a later updated_at), so which of a delete and a
-- concurrent update wins is decided by (epoch, updated_at, origin_region) in
-- every region, by the update trigger of conflicts.sql. Both orders:
--   * the stale delete arrives after the newer update: its version is lower,
--     rm_conflict_upd drops it, the row stays live everywhere;
--   * the newer update arrives after the stale delete: its version is higher,
--     it replaces the tombstone, the row is live again everywhere.
-- Only after every region holds the tombstones (replication drained) does that
-- path remove them physically. rm_install_delete_rules(table) attaches:
--   * rm_keep_tombstone (origin, BEFORE UPDATE): a local write never revives a
--     tombstone, it is skipped like a lost race (zero rows), so nothing newer
--     than a tombstone can appear once every region holds it;
--   * rm_conflict_del (replica, BEFORE DELETE): an incoming physical delete
--     removes only a tombstone; a live row here means a newer version won, and
--     the delete is dropped and counted as 'delete_lost';
--   * rm_no_live_delete (origin, BEFORE DELETE): a local delete of a live row is
--     refused. Only a tombstone may be removed, so every delete goes through the
--     repository path; a direct DELETE would remove the row here while every
--     peer (rm_conflict_del) keeps it, and the regions would differ until verify;
--   * rm_no_truncate (always, BEFORE TRUNCATE): refused in every region, apply
--     worker included; TRUNCATE is not published (rm_pub), so it would make
--     this region silently differ from its peers.
-- Needs conflicts.sql and triggers.sql applied first: the rules go on every
-- table that carries the replica conflict triggers, which is what marks a
-- table as replicated.

CREATE OR REPLACE FUNCTION rm_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'TRUNCATE of replicated table % is refused', TG_TABLE_NAME
    USING DETAIL = 'TRUNCATE does not replicate (the publication carries inserts, updates and deletes only), '
                   'so it would make this region differ from its peers until verify finds it.',
          HINT = 'remove finished runs with ''regionmesh runs prune --older-than 30d'' (deletes that replicate); '
                 'rebuild a region''s copy with ''regionmesh region resync REGION --from SEED''.';
END $$;

CREATE OR REPLACE FUNCTION rm_refuse_live_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.deleted_at IS NOT NULL THEN
    RETURN OLD;  -- the removal of a tombstone: the repository path's second step
  END IF;
  RAISE EXCEPTION 'DELETE of a live row of replicated table % is refused', TG_TABLE_NAME
    USING DETAIL = 'a delete must first be a tombstone (deleted_at, a version under the conflict rule): '
                   'a direct DELETE removes the row here while every peer keeps it.',
          HINT = 'delete through regionmesh (''regionmesh runs prune'', ''regionmesh tenants erase''), '
                 'which tombstones the rows and removes them once every region holds the tombstones.',
          ERRCODE = 'restrict_violation';
END $$;

CREATE OR REPLACE FUNCTION rm_keep_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.deleted_at IS NOT NULL THEN
    RETURN NULL;  -- deleted: the write is skipped, as a lost race would be
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION rm_install_delete_rules(p_table regclass) RETURNS void
LANGUAGE plpgsql AS $gen$
DECLARE
  tname text := (SELECT relname FROM pg_class WHERE oid = p_table);
  nsp text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table);
  pk_text text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_table AND attname = 'deleted_at' AND NOT attisdropped) THEN
    RAISE EXCEPTION 'replicated table % has no deleted_at column; every replicated table needs one', tname;
  END IF;
  SELECT string_agg(format('OLD.%I::text', a.attname), ' || '','' || ' ORDER BY array_position(i.indkey::int2[], a.attnum))
    INTO pk_text
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
   WHERE i.indrelid = p_table AND i.indisprimary;
  IF pk_text IS NULL THEN
    RAISE EXCEPTION 'table % has no primary key; replicated tables need one', tname;
  END IF;

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql SET search_path = %3$I, pg_catalog AS $body$
    BEGIN
      IF OLD.deleted_at IS NOT NULL THEN
        RETURN OLD;  -- the removal of a tombstone every region holds
      END IF;
      INSERT INTO replication_conflicts (table_name, pk, kind, local_origin, local_epoch, local_updated_at)
      VALUES (TG_TABLE_NAME, %2$s, 'delete_lost', OLD.origin_region, OLD.epoch, OLD.updated_at);
      RETURN NULL;
    END $body$;
  $f$, 'rm_conflict_del_' || tname, pk_text, nsp);

  EXECUTE format('DROP TRIGGER IF EXISTS rm_conflict_del ON %I', tname);
  EXECUTE format('CREATE TRIGGER rm_conflict_del BEFORE DELETE ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                 tname, 'rm_conflict_del_' || tname);
  EXECUTE format('ALTER TABLE %I ENABLE REPLICA TRIGGER rm_conflict_del', tname);
  EXECUTE format('DROP TRIGGER IF EXISTS rm_keep_tombstone ON %I', tname);
  EXECUTE format('CREATE TRIGGER rm_keep_tombstone BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION rm_keep_tombstone()',
                 tname);
  EXECUTE format('DROP TRIGGER IF EXISTS rm_no_live_delete ON %I', tname);
  EXECUTE format('CREATE TRIGGER rm_no_live_delete BEFORE DELETE ON %I FOR EACH ROW EXECUTE FUNCTION rm_refuse_live_delete()',
                 tname);
  EXECUTE format('DROP TRIGGER IF EXISTS rm_no_truncate ON %I', tname);
  EXECUTE format('CREATE TRIGGER rm_no_truncate BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION rm_refuse_truncate()',
                 tname);
  EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER rm_no_truncate', tname);
END $gen$;

-- Every replicated table (the ones with the replica conflict triggers), in name order.
SELECT rm_install_delete_rules(t.tgrelid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE t.tgname = 'rm_conflict_ins' AND NOT t.tgisinternal
 ORDER BY c.relname;
