-- conflicts.sql: rm_install_conflict_triggers(table), the generator of the
-- replica-side conflict triggers of one replicated table. It writes two
-- functions per table from the catalog (rm_conflict_ins_<table>,
-- rm_conflict_upd_<table>) and attaches them as ENABLE REPLICA triggers, which
-- fire only in the apply worker:
--   * BEFORE INSERT: the incoming row is written with INSERT ... ON CONFLICT (pk)
--     DO UPDATE, so no unique violation on the key can stall the apply worker;
--   * BEFORE UPDATE: the incoming version wins only if
--     (epoch, updated_at, origin_region COLLATE "C") is greater than the local
--     one's, compared the same way in every region.
-- Every real conflict is counted in the local table replication_conflicts.
-- The generated functions depend on the table's columns: after changing a
-- replicated table's columns, apply triggers.sql again.

CREATE OR REPLACE FUNCTION rm_install_conflict_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql AS $gen$
DECLARE
  tname text := (SELECT relname FROM pg_class WHERE oid = p_table);
  -- The apply worker runs with an empty search_path: the functions carry their own.
  nsp text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table);
  pk_cols text[];
  all_cols text[];
  col_list text;
  pk_list text;
  set_list text;
  pk_text text;
BEGIN
  SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
    INTO pk_cols
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
   WHERE i.indrelid = p_table AND i.indisprimary;
  IF pk_cols IS NULL THEN
    RAISE EXCEPTION 'table % has no primary key; replicated tables need one', tname;
  END IF;
  SELECT array_agg(attname::text ORDER BY attnum) INTO all_cols
    FROM pg_attribute WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped;
  SELECT string_agg(quote_ident(c), ', ') INTO col_list FROM unnest(all_cols) AS c;
  SELECT string_agg(quote_ident(c), ', ') INTO pk_list FROM unnest(pk_cols) AS c;
  SELECT string_agg(format('%1$I = EXCLUDED.%1$I', c), ', ') INTO set_list
    FROM unnest(all_cols) AS c WHERE NOT c = ANY (pk_cols);
  SELECT string_agg(format('OLD.%I::text', c), ' || '','' || ') INTO pk_text FROM unnest(pk_cols) AS c;

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql SET search_path = %6$I, pg_catalog AS $body$
    BEGIN
      IF pg_trigger_depth() > 1 THEN
        RETURN NEW;  -- our own upsert below
      END IF;
      INSERT INTO %2$I (%3$s) SELECT (NEW).* ON CONFLICT (%4$s) DO UPDATE SET %5$s;
      RETURN NULL;  -- written above (or resolved by the update trigger)
    END $body$;
  $f$, 'rm_conflict_ins_' || tname, tname, col_list, pk_list, set_list, nsp);

  EXECUTE format($f$
    CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql SET search_path = %3$I, pg_catalog AS $body$
    DECLARE
      kind text;
      verdict int;
    BEGIN
      verdict := CASE
        WHEN (NEW.epoch, NEW.updated_at, NEW.origin_region COLLATE "C")
           > (OLD.epoch, OLD.updated_at, OLD.origin_region COLLATE "C") THEN 1
        WHEN (NEW.epoch, NEW.updated_at, NEW.origin_region) = (OLD.epoch, OLD.updated_at, OLD.origin_region) THEN 0
        ELSE -1 END;
      IF verdict = 1 AND NEW.origin_region = OLD.origin_region AND pg_trigger_depth() = 1 THEN
        RETURN NEW;  -- the common case: that region's newer version of its own row
      END IF;
      kind := CASE WHEN pg_trigger_depth() > 1 THEN 'insert_exists' ELSE 'update' END
              || CASE verdict WHEN 1 THEN '_won' WHEN 0 THEN '_duplicate' ELSE '_lost' END;
      INSERT INTO replication_conflicts (table_name, pk, kind, local_origin, remote_origin,
                                         local_epoch, remote_epoch, local_updated_at, remote_updated_at)
      VALUES (TG_TABLE_NAME, %2$s, kind, OLD.origin_region, NEW.origin_region,
              OLD.epoch, NEW.epoch, OLD.updated_at, NEW.updated_at);
      IF verdict = 1 THEN
        RETURN NEW;
      END IF;
      RETURN NULL;
    END $body$;
  $f$, 'rm_conflict_upd_' || tname, pk_text, nsp);

  EXECUTE format('DROP TRIGGER IF EXISTS rm_conflict_ins ON %I', tname);
  EXECUTE format('DROP TRIGGER IF EXISTS rm_conflict_upd ON %I', tname);
  EXECUTE format('CREATE TRIGGER rm_conflict_ins BEFORE INSERT ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                 tname, 'rm_conflict_ins_' || tname);
  EXECUTE format('CREATE TRIGGER rm_conflict_upd BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                 tname, 'rm_conflict_upd_' || tname);
  -- Fire only in replica mode, i.e. in the apply worker; local writes are untouched.
  EXECUTE format('ALTER TABLE %I ENABLE REPLICA TRIGGER rm_conflict_ins', tname);
  EXECUTE format('ALTER TABLE %I ENABLE REPLICA TRIGGER rm_conflict_upd', tname);
END $gen$;
