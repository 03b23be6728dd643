-- history.sql: the triggers of tenant_registry_history (every change of a tenant's intent, one
-- row per registry epoch, written in the same transaction as the change), as triggers.sql and
-- deletes.sql give every replicated table. Needs stamp.sql, conflicts.sql and deletes.sql.

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON tenant_registry_history
  FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('tenant_registry_history'::regclass);
SELECT rm_install_delete_rules('tenant_registry_history'::regclass);
