-- 0029: the console's run list found by idempotency key alone (issue 24). The key is unique per
-- tenant ((tenant_id, idempotency_key)), and that index serves a key given with its tenant; an
-- operator searching by a key alone (a producer's log line names the key) scanned every run:
-- 137 ms median, 247 ms p99 over 1,000,000 runs in bench.console. An index on the key alone.
-- Downgrade: the index is dropped.

CREATE INDEX ix_workflow_runs_idempotency_key ON workflow_runs (idempotency_key);
