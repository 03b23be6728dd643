-- console.sql: the triggers of console_actions (0025), the replicated audit trail of the operator
-- console, as triggers.sql and deletes.sql give every replicated table. Needs stamp.sql,
-- conflicts.sql and deletes.sql.

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON console_actions FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('console_actions'::regclass);
SELECT rm_install_delete_rules('console_actions'::regclass);
