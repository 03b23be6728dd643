"""Wire names: Celery task names and queue names. Listed in the README; change
a task's arguments incompatibly and its name gets a new version suffix."""

from __future__ import annotations

SUBMIT_TASK = "regionmesh.submit"  # kwargs: tenant_id, workflow, input, idempotency_key, submission_id, v=1
RUN_STEP_TASK = "regionmesh.run_step.v1"  # kwargs: task_id


def submit_queue(region: str) -> str:
    return f"rm.{region}.submit"


def steps_queue(region: str) -> str:
    return f"rm.{region}.steps"
