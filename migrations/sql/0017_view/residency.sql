-- residency.sql: the triggers of the residency registry's replicated tables
-- (tenant_zones, tenant_erasures, erasure_confirmations), as triggers.sql and
-- deletes.sql give every replicated table: rm_stamp on local writes, the
-- replica conflict triggers, tombstones and refused TRUNCATE. Needs stamp.sql,
-- conflicts.sql and deletes.sql applied first.

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON tenant_zones FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON tenant_erasures FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON erasure_confirmations FOR EACH ROW EXECUTE FUNCTION rm_stamp();

SELECT rm_install_conflict_triggers('tenant_zones'::regclass);
SELECT rm_install_conflict_triggers('tenant_erasures'::regclass);
SELECT rm_install_conflict_triggers('erasure_confirmations'::regclass);
SELECT rm_install_delete_rules('tenant_zones'::regclass);
SELECT rm_install_delete_rules('tenant_erasures'::regclass);
SELECT rm_install_delete_rules('erasure_confirmations'::regclass);
