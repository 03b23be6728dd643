-- submissions.sql: the triggers of duplicate_submissions (0019), as triggers.sql and deletes.sql
-- give every replicated table. Needs stamp.sql, conflicts.sql and deletes.sql.

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON duplicate_submissions
  FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('duplicate_submissions'::regclass);
SELECT rm_install_delete_rules('duplicate_submissions'::regclass);
