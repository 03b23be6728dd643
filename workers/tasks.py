"""Celery tasks: thin adapters. Load, call one service function, map transient errors to a retry."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import uuid
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Reject, Retry
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from regionmesh.backoff import compute_backoff
from regionmesh.errors import RejectedSubmission
from regionmesh.log import event
from regionmesh.models import runs
from regionmesh.names import RECEIVED_TASK, REJECTED_TASK, RUN_STEP_TASK, SUBMIT_TASK
from regionmesh.workers import executor, fair_dispatch, forward, forward_receipt, lifecycle
from regionmesh.workers.intake import DeadLetterRecord, dead_letter_record, residency_keep
from regionmesh.workers.metrics import SUBMISSIONS
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import TENANT_RE, Submission, parse_submission

# Set by the consumer on every accepted message: the size and SHA-256 of the body as the
# producer sent it, so a dead letter written by a task still matches the producer's bytes.
BODY_SIZE_HEADER = "rm_body_size"
BODY_SHA256_HEADER = "rm_body_sha256"

MAX_INFRA_BACKOFF_S = 30


def retry_later(task: Task, countdown: float, exc: Exception | None = None) -> NoReturn:
    """``task.retry``, keeping the message whatever the broker does.

    ``retry`` publishes a copy due in ``countdown`` seconds and the original is acked. When that
    publish fails (the broker went away) Celery raises ``Reject(requeue=False)``, which drops the
    original: the submission would be lost. Requeue it instead; with the broker gone the reject
    itself fails and the message stays in ``unacked``, given back once the broker answers.
    """
    try:
        raise task.retry(exc=exc, countdown=countdown, max_retries=None)
    except Reject as refused:
        event(logging.WARNING, "task.retry_unpublished", task=task.name, error=type(refused.reason).__name__)
        raise Reject(refused.reason, requeue=True) from refused


def _infra_retry(task: Task, exc: Exception) -> NoReturn:
    """The database is unreachable: try again later (the message is kept, never dropped)."""
    countdown = compute_backoff(task.request.retries + 1, base_s=1.0, max_s=MAX_INFRA_BACKOFF_S, jitter=random.random())
    retry_later(task, countdown, exc)


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: the database or a broker is unreachable, not the submission's fault."""
    if isinstance(exc, (OperationalError, *forward.PUBLISH_ERRORS)):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, SQLAlchemyError) and not isinstance(exc, DBAPIError)  # e.g. a pool timeout


def refusal_reason(exc: BaseException) -> str:
    """Why accepting failed, without the exception's text: a driver error's text carries the
    statement's parameters and PostgreSQL's DETAIL/CONTEXT quote the input."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        code = getattr(exc.orig, "pgcode", None)
        diag = getattr(exc.orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None)
        where = f", constraint {constraint}" if constraint else ""
        return f"the database refused the submission: {type(exc.orig).__name__} (SQLSTATE {code}{where})"
    return f"{type(exc).__name__} while accepting the submission"


def dead_letter(rt: Runtime, record: DeadLetterRecord) -> None:
    """Keep a rejected message in this region's dead_letters and log it (ids, size, digest, reason; never the body)."""
    runs.record_dead_letter(rt.engine, region=rt.region, task_name=record.task_name, reason=record.reason,
                            submission_id=record.submission_id, tenant_id=record.tenant_id, payload=record.payload,
                            task_id=record.task_id, content_type=record.content_type,
                            payload_size=record.payload_size, payload_sha256=record.payload_sha256)
    event(logging.ERROR, "message.rejected", region=rt.region, tenant=record.tenant_id, task=record.task_name,
          task_id=record.task_id, submission=record.submission_id, size=record.payload_size,
          sha256=record.payload_sha256, reason=record.reason)


def residency_scrub(rt: Runtime, record: DeadLetterRecord, *, certain: bool) -> DeadLetterRecord:
    """``record`` as residency and erasure let this region keep it (``intake.residency_keep``): the
    tenant's zone binding and erasure receipt read fresh, since a refusal is rare and a binding or
    an erasure the router's cache has not seen yet must count."""
    if record.tenant_id is None:
        return residency_keep(record, certain=False, outside_zone=False, erased=False)
    binding, (_, is_erased) = rt.router.facts(record.tenant_id, fresh=True)
    outside = binding is not None and rt.region not in binding.regions
    return residency_keep(record, certain=certain, outside_zone=outside, erased=is_erased)


def reject_task_message(rt: Runtime, task: Task, reason: str, args: Any, kwargs: Any, *,
                        submission_id: str | None = None, tenant_id: str | None = None) -> None:
    """Dead-letter the message a task is running: its kwargs as JSON (bounded), with the size and
    digest of the producer's body when the consumer recorded them. What residency and erasure
    allow of it is kept (``residency_scrub``): no body for a zoned tenant outside its zone or a
    message whose tenant is not known, neither id nor body for an erased tenant."""
    try:
        raw = json.dumps([list(args), kwargs, {}], default=repr).encode()
    except (TypeError, ValueError, RecursionError):
        raw = repr((args, kwargs)).encode("utf-8", "backslashreplace")
    tenant = tenant_id if tenant_id is not None else kwargs.get("tenant_id") if isinstance(kwargs, dict) else None
    if not (isinstance(tenant, str) and TENANT_RE.fullmatch(tenant)):
        tenant = None  # not a tenant id (NUL, too long, ...): never bound to a zone nor erased, never looked up
    record = dead_letter_record(raw, reason=reason, task_name=task.name, task_id=task.request.id,
                                submission_id=submission_id, tenant_id=tenant, content_type="application/json")
    size, sha = getattr(task.request, BODY_SIZE_HEADER, None), getattr(task.request, BODY_SHA256_HEADER, None)
    if isinstance(size, int) and isinstance(sha, str):
        record = dataclasses.replace(record, payload_size=size, payload_sha256=sha)
    dead_letter(rt, residency_scrub(rt, record, certain=tenant is not None and not args))


def register_tasks(app: Celery, rt: Runtime) -> None:
    # max_retries=None: retry() without a limit (retry(max_retries=None) alone means the default, 3).
    # shared=False: these closures belong to this app's runtime; a second app in the process (failover
    # publishing for the heir) must not be handed them by Celery's shared-task registry.
    @app.task(name=SUBMIT_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None,
              shared=False)
    def submit(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
        sub: Submission | None = None
        try:
            if args:
                raise RejectedSubmission("positional arguments are not accepted; send keyword arguments")
            sub = parse_submission(kwargs, max_input_bytes=rt.config.max_input_bytes)
            # With fair dispatch the submission is only recorded (cheap intake): its tasks wait in
            # PostgreSQL and run when their tenant's turn comes (workers/fair_dispatch.py).
            started = lifecycle.accept(rt, sub, hops=int(kwargs.get("hops") or 0), message=sub.message(),
                                       keep_first=not rt.config.settings.fair_dispatch)
            if started.outcome in ("forwarded", "outbox"):
                return {"run_id": str(sub.run_id), "home": started.home, "status": started.outcome}
            if started.outcome == "no_lease":
                # This region may not create runs now (no lease from a majority, or fenced): the
                # message waits in the broker and comes back; it is neither lost nor run elsewhere.
                retry_later(self, 2)
            SUBMISSIONS.labels(rt.region, "started" if started.created else "duplicate").inc()
        except (Retry, Reject):
            raise
        except RejectedSubmission as exc:
            return _refuse(self, exc.reason, args, kwargs, sub, exc.submission_id, exc.tenant_id)
        except Exception as exc:
            if is_transient(exc):
                return _infra_retry(self, exc)
            # Anything else is this message's fault (or a bug it triggers): a dead letter, never an
            # acked failure. The reason is built here: the exception's text may quote the input.
            return _refuse(self, refusal_reason(exc), args, kwargs, sub,
                           sub.submission_id if sub else None, sub.tenant_id if sub else None)
        if started.outcome in ("started", "duplicate"):
            _acknowledge(kwargs, sub, started.run_id)
        if started.inline is not None:
            try:
                executor.execute(rt, started.inline.task_id, started.inline, started.claimed_from)
            except Exception as exc:  # the task is queued in PostgreSQL; the reconciler has it
                event(logging.WARNING, "step.inline_failed", region=rt.region, run=started.run_id,
                      error=type(exc).__name__)
        return {"run_id": str(started.run_id), "created": started.created, "status": started.status}

    def _acknowledge(kwargs: dict[str, Any], sub: Submission | None, run_id: uuid.UUID) -> None:
        """The receipt a forwarder outside the tenant's zone is owed (workers/forward_receipt.py);
        best effort: a failure here never fails the submission."""
        if sub is None:
            return
        try:
            forward_receipt.acknowledge(rt, kwargs.get("forwarded_by"), sub.tenant_id, run_id, sub.submission_id)
        except Exception as exc:  # the forwarder's outbox ends the entry by its other paths
            event(logging.WARNING, "submit.receipt_failed", region=rt.region, run=run_id, error=type(exc).__name__)

    def _refuse(task: Task, reason: str, args: Any, kwargs: dict[str, Any], sub: Submission | None,
                submission_id: str | None, tenant_id: str | None) -> dict[str, Any]:
        SUBMISSIONS.labels(rt.region, "rejected").inc()
        try:
            reject_task_message(rt, task, reason, args, kwargs, submission_id=submission_id, tenant_id=tenant_id)
        except Exception as exc:
            if is_transient(exc):  # keep the message until the rejection can be recorded
                return _infra_retry(task, exc)
            raise
        forwarder = kwargs.get("forwarded_by")
        if isinstance(forwarder, str) and forwarder in rt.config.regions and forwarder != rt.region:
            notice = forward.RejectionNotice(rt.region, reason, submission_id, sub.run_id if sub else None, tenant_id)
            if notice.submission_id is not None or notice.run_id is not None:
                forward.notify_rejection(rt, forwarder, notice)
        return {"status": "rejected", "reason": reason}

    @app.task(name=REJECTED_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None,
              shared=False)
    def rejected(self: Task, *args: Any, **kwargs: Any) -> str:
        notice = None if args else forward.parse_notice(kwargs, set(rt.config.regions))
        try:
            if notice is None:
                reject_task_message(rt, self, "malformed rejection notice", args, kwargs)
                return "rejected"
            forward.record_rejection(rt, notice)
        except Exception as exc:
            if is_transient(exc):
                _infra_retry(self, exc)
            raise
        return "recorded"

    @app.task(name=RECEIVED_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None,
              shared=False)
    def received(self: Task, *args: Any, **kwargs: Any) -> str:
        notice = None if args else forward_receipt.parse(kwargs, set(rt.config.regions))
        try:
            if notice is None:
                reject_task_message(rt, self, "malformed receipt notice", args, kwargs)
                return "rejected"
            forward_receipt.record(rt, notice)
        except Exception as exc:
            if is_transient(exc):
                _infra_retry(self, exc)
            raise
        return "recorded"

    @app.task(name=RUN_STEP_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None,
              shared=False)
    def run_step(self: Task, *args: Any, **kwargs: Any) -> str:
        raw = kwargs.get("task_id")
        try:
            task_id = uuid.UUID(str(raw)) if raw is not None and not args else None
        except ValueError:
            task_id = None
        if task_id is None:
            reject_task_message(rt, self, "run_step needs exactly one keyword argument task_id=<uuid>", args, kwargs)
            return "rejected"
        try:
            if rt.config.settings.fair_dispatch:
                return fair_dispatch.execute(rt, task_id)
            return executor.execute(rt, task_id)
        except OperationalError as exc:
            _infra_retry(self, exc)
            raise  # unreachable: _infra_retry raises
