"""Celery tasks: thin adapters. Load, call one service function, map transient errors to a retry."""

from __future__ import annotations

import json
import logging
import random
import uuid
from typing import Any, NoReturn

from celery import Celery, Task
from sqlalchemy.exc import DBAPIError, OperationalError

from regionmesh.backoff import compute_backoff
from regionmesh.errors import RejectedSubmission
from regionmesh.log import event
from regionmesh.models import runs
from regionmesh.models.failover import fence as fenced
from regionmesh.names import RUN_STEP_TASK, SUBMIT_TASK
from regionmesh.workers import executor, forward, lifecycle
from regionmesh.workers.metrics import SUBMISSIONS
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import parse_submission

MAX_INFRA_BACKOFF_S = 30


def _infra_retry(task: Task, exc: Exception) -> NoReturn:
    """The database is unreachable: try again later (the message is kept, never dropped)."""
    countdown = compute_backoff(task.request.retries + 1, base_s=1.0, max_s=MAX_INFRA_BACKOFF_S, jitter=random.random())
    raise task.retry(exc=exc, countdown=countdown, max_retries=None)


def dead_letter(rt: Runtime, task_name: str | None, reason: str, payload: Any, *,
                submission_id: str | None = None, tenant_id: str | None = None) -> None:
    try:
        body = payload if isinstance(payload, str) else json.dumps(payload, default=repr)[:65536]
    except (TypeError, ValueError):
        body = repr(payload)[:65536]
    runs.record_dead_letter(rt.engine, region=rt.region, task_name=task_name, reason=reason,
                            submission_id=submission_id, tenant_id=tenant_id, payload=body)
    event(logging.ERROR, "message.rejected", region=rt.region, tenant=tenant_id, task=task_name,
          submission=submission_id, reason=reason)


def register_tasks(app: Celery, rt: Runtime) -> None:
    @app.task(name=SUBMIT_TASK, bind=True, acks_late=True, ignore_result=True)
    def submit(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            if args:
                raise RejectedSubmission("positional arguments are not accepted; send keyword arguments")
            sub = parse_submission(kwargs, max_input_bytes=rt.config.max_input_bytes)
            placement = rt.router.place(sub.tenant_id)
            hops = int(kwargs.get("hops") or 0)
            if placement.region != rt.region and hops < forward.MAX_HOPS:
                outcome = forward.forward(rt, placement.region, sub.message() | {"hops": hops}, sub.run_id)
                return {"run_id": str(sub.run_id), "home": placement.region, "status": outcome}
            if fenced(rt.engine)[0]:
                # Back from being away and not caught up: the registry here may be stale.
                raise self.retry(countdown=2, max_retries=None)
            started = lifecycle.start_run(rt, sub, keep_first=True)
            SUBMISSIONS.labels(rt.region, "started" if started.created else "duplicate").inc()
        except RejectedSubmission as exc:
            SUBMISSIONS.labels(rt.region, "rejected").inc()
            dead_letter(rt, SUBMIT_TASK, exc.reason, {"args": args, "kwargs": kwargs},
                        submission_id=exc.submission_id, tenant_id=exc.tenant_id)
            return {"status": "rejected", "reason": exc.reason}
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(exc, OperationalError):
                raise
            return _infra_retry(self, exc)
        if started.inline is not None:
            try:
                executor.execute(rt, started.inline.task_id, started.inline)
            except Exception as exc:  # the task is queued in PostgreSQL; the reconciler has it
                event(logging.WARNING, "step.inline_failed", region=rt.region, run=started.run_id, error=exc)
        return {"run_id": str(started.run_id), "created": started.created, "status": started.status}

    @app.task(name=RUN_STEP_TASK, bind=True, acks_late=True, ignore_result=True)
    def run_step(self: Task, *args: Any, **kwargs: Any) -> str:
        raw = kwargs.get("task_id")
        try:
            task_id = uuid.UUID(str(raw)) if raw is not None and not args else None
        except ValueError:
            task_id = None
        if task_id is None:
            dead_letter(rt, RUN_STEP_TASK, f"run_step needs task_id=<uuid>; got args={args!r} task_id={raw!r}",
                        {"args": args, "kwargs": kwargs})
            return "rejected"
        try:
            return executor.execute(rt, task_id)
        except OperationalError as exc:
            _infra_retry(self, exc)
            raise  # unreachable: _infra_retry raises
