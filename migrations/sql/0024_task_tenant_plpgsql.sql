-- 0024: rm_task_tenant in PL/pgSQL. 0022 made it a SQL function, which every completion and failure
-- calls (rm_complete_task, rm_fail_task) for the tenant lock it takes before an erasure's; a SQL
-- function whose body is a query with a FROM is not inlined when called from PL/pgSQL, and it
-- was parsed and planned again on every call. PL/pgSQL keeps the plan for the session.
-- Same signature and result: workers of the previous release call it as before.
-- Downgrade: the function comes back as of 0022 by revision.

-- The tenant of the run a task belongs to (NULL: no such task here). PL/pgSQL keeps its query's
-- plan for the session; as a SQL function (0022) its join was planned again on every call.
CREATE OR REPLACE FUNCTION rm_task_tenant(p_task uuid) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_tenant text;
BEGIN
  SELECT r.tenant_id INTO v_tenant FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id WHERE t.id = p_task;
  RETURN v_tenant;
END $$;
