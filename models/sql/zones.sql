-- zones.sql: the triggers of zones (0023), the replicated zone membership that placement reads,
-- as triggers.sql and deletes.sql give every replicated table. Needs stamp.sql, conflicts.sql and
-- deletes.sql.

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON zones FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('zones'::regclass);
SELECT rm_install_delete_rules('zones'::regclass);
