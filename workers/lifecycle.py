"""Starting, cancelling and retrying runs: the service functions tasks and the CLI call."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from regionmesh.errors import InvalidTransition, RunNotFound
from regionmesh.log import event
from regionmesh.models import runs
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import Submission, plan_run


@dataclass(frozen=True)
class Started:
    run_id: uuid.UUID
    created: bool
    status: str
    inline: runs.Claim | None = None  # a ready task claimed for the caller to run


def start_run(rt: Runtime, sub: Submission, *, keep_first: bool = False) -> Started:
    """Create the run of a submission in this region (once per (tenant, key)) and publish its ready steps.

    With ``keep_first`` the first ready task is claimed in the creating
    transaction and returned for the caller to run inline. Raises RejectedSubmission for an unknown workflow.
    """
    run, steps = plan_run(sub, rt.registry, region=rt.region)
    ready, inline = runs.create_run(
        rt.engine, run, steps, claim_for=(rt.region, rt.worker_id) if keep_first else None
    )
    if ready is None:
        event(logging.INFO, "run.duplicate", region=rt.region, tenant=sub.tenant_id, run=sub.run_id,
              submission=sub.submission_id)
        return Started(sub.run_id, False, runs.run_status(rt.engine, sub.run_id) or "unknown")
    rt.publish_steps(ready)
    event(logging.INFO, "run.created", region=rt.region, tenant=sub.tenant_id, run=sub.run_id,
          workflow=sub.workflow, steps=len(steps), status=run["status"], error=run.get("error"))
    return Started(sub.run_id, True, str(run["status"]), inline)


def cancel(rt: Runtime, run_id: uuid.UUID) -> None:
    """Cancel a running run: queued steps never start, a running step's result is discarded.

    Raises RunNotFound or InvalidTransition.
    """
    if not runs.cancel_run(rt.engine, run_id):
        status = runs.run_status(rt.engine, run_id)
        if status is None:
            raise RunNotFound(str(run_id))
        raise InvalidTransition(str(run_id), status, "cancel")
    event(logging.INFO, "run.cancelled", region=rt.region, run=run_id)


def retry(rt: Runtime, run_id: uuid.UUID) -> int:
    """Re-open a failed run from its failed steps; completed steps are kept. Returns tasks published.

    Raises RunNotFound or InvalidTransition.
    """
    ready = runs.retry_run(rt.engine, run_id)
    if ready is None:
        status = runs.run_status(rt.engine, run_id)
        if status is None:
            raise RunNotFound(str(run_id))
        raise InvalidTransition(str(run_id), status, "retry")
    rt.publish_steps(ready)
    event(logging.INFO, "run.retried", region=rt.region, run=run_id, tasks=len(ready))
    return len(ready)
