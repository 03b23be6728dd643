-- triggers.sql: the triggers of every replicated table (the tables with
-- epoch/updated_at/origin_region, models/tables.py REPLICATED_TABLES):
--   * rm_stamp (stamp.sql), an ordinary (origin) trigger: local writes only;
--   * rm_conflict_ins / rm_conflict_upd (conflicts.sql), replica triggers: the
--     apply worker only.
-- A new replicated table gets its two lines here, and the migration that creates
-- it applies this file. Needs stamp.sql and conflicts.sql applied first.

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON regions FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON tenant_registry FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON workflow_runs FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON workflow_steps FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON step_tasks FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON step_attempts FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON heartbeats FOR EACH ROW EXECUTE FUNCTION rm_stamp();
CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON lease_grants FOR EACH ROW EXECUTE FUNCTION rm_stamp();

-- Regenerates both functions from the table's current columns (idempotent).
SELECT rm_install_conflict_triggers('regions'::regclass);
SELECT rm_install_conflict_triggers('tenant_registry'::regclass);
SELECT rm_install_conflict_triggers('workflow_runs'::regclass);
SELECT rm_install_conflict_triggers('workflow_steps'::regclass);
SELECT rm_install_conflict_triggers('step_tasks'::regclass);
SELECT rm_install_conflict_triggers('step_attempts'::regclass);
SELECT rm_install_conflict_triggers('heartbeats'::regclass);
SELECT rm_install_conflict_triggers('lease_grants'::regclass);
