"""Running one step task: claim, call the handler with a time limit, record the outcome.

The claim and the outcome are each one transaction; the handler runs between
them, outside any transaction. Publishing what an outcome released follows
its commit. The time limit (``workers/step_limit.py``) is counted from just before
the claim and ends the pool process of a handler that swallows it.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from regionmesh.host import pid_alive
from regionmesh.log import event
from regionmesh.models import lease, runs, waits
from regionmesh.workers.definitions import Park, RetryPolicy
from regionmesh.workers.metrics import STEP_DURATION
from regionmesh.workers.retry import backoff_s, should_retry
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.step_limit import OVERRUN_RETRY_GUARD_S, StepLimit, StepTimeout, process_end_allowed

__all__ = ["StepContext", "StepTimeout", "execute", "fencing_token"]

# Retries sooner than this ride on a broker countdown; later ones wait in
# PostgreSQL (not_before) for the reconciler, so no message sits in a worker's
# memory near the visibility timeout.
MAX_COUNTDOWN_S = 30.0
# Inline continuation: after a step, the worker goes on with the first step it
# released (claimed in the same transaction) instead of a broker round trip,
# up to this many steps or seconds; the rest is published.
MAX_INLINE_STEPS = 100
# A step whose worker died is tried again even if its retry policy allows one attempt,
# up to this many tries in all; then it fails (a message that kills its worker every time).
MIN_WORKER_LOST_TRIES = 3
INLINE_BUDGET_S = 2.0


# A fencing token is epoch * FENCE_EPOCH_FACTOR + the claim's stamp in microseconds since 1970
# (below 10**16 until the year 2286).
FENCE_EPOCH_FACTOR = 10**16


def fencing_token(epoch: int, stamp_us: int) -> int:
    """The token of a claim: ordered by the run's epoch, then by the claim's row version."""
    return epoch * FENCE_EPOCH_FACTOR + stamp_us


@dataclass(frozen=True)
class StepContext:
    """What a handler knows about the work it is doing.

    ``attempt``: this try's number (1 for the first; ``runs retry`` starts it over at 1).
    ``epoch``: the run's owner epoch at the claim (it grows when another region adopts the run).
    ``lease_until``: until when this region held its lease as its claim read it (the database's
    wall clock; None: it held none). A handler whose side effects must not outlive the lease
    stops before it.
    ``fencing_token``: an integer that only grows for a task, across retries, re-queues after a
    lost worker, ``runs retry`` and adoptions by another region (``fencing_token()``: epoch, then
    the row version the claim wrote, returned by the claim itself). An external store that keeps the
    largest token it has seen per idempotency key and refuses a write with a smaller one makes a
    stale execution (a worker that ran on after its task was handed to another, the crash re-run
    of the README's limits) harmless: its writes are refused. Compare as integers of any size
    (PostgreSQL ``numeric``; a ``bigint`` overflows from epoch 923).
    """

    run_id: uuid.UUID
    tenant_id: str
    workflow: str
    step: str
    index: int | None
    attempt: int
    idempotency_key: str
    region: str
    engine: Engine
    epoch: int = 0
    lease_until: datetime | None = None
    fencing_token: int = 0


def _dead_local_holder(worker: str | None) -> bool:
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def execute(rt: Runtime, task_id: uuid.UUID, claim: runs.Claim | None = None,
            claimed_from: float | None = None) -> str:
    """Run one step task (``claim``: already claimed, by a transaction that started after the
    monotonic reading ``claimed_from``), then (inline continuation) the tasks it releases, within a
    budget. Each step's time limit counts from just before its claim.

    Returns the first task's outcome: succeeded, retry, failed, discarded or skipped.
    """
    if claim is None or claimed_from is None:
        claimed_from = time.monotonic()
    if claim is None:
        claim = runs.claim_task(rt.engine, task_id, region=rt.region, worker=rt.worker_id)
    if claim is None:
        holder = runs.task_holder(rt.engine, task_id)
        if holder is not None and holder[0] == "running" and _dead_local_holder(holder[1]):
            # Redelivered after its worker process died (reject_on_worker_lost).
            claim = runs.claim_task(rt.engine, task_id, region=rt.region, worker=rt.worker_id, takeover=holder[1])
        if claim is None:
            event(logging.DEBUG, "step.skipped", region=rt.region, task=task_id, status=holder and holder[0])
            return "skipped"
    first: str | None = None
    budget_end = time.monotonic() + INLINE_BUDGET_S
    steps = 0
    current: runs.Claim | None = claim
    while current is not None:
        steps += 1
        keep_going = steps < MAX_INLINE_STEPS and time.monotonic() < budget_end
        outcome, current, claimed_from = _run_claimed(rt, current, claim_next=keep_going, claimed_from=claimed_from)
        first = first or outcome
    return first or "skipped"


def _run_claimed(rt: Runtime, claim: runs.Claim, *, claim_next: bool,
                 claimed_from: float) -> tuple[str, runs.Claim | None, float]:
    """Run a claimed task and record its outcome. Returns (outcome, next claimed task or None,
    the monotonic reading from before the next task's claim)."""
    task_id = claim.task_id
    fields = {"region": rt.region, "tenant": claim.tenant_id, "run": claim.run_id,
              "step": claim.step_key if claim.index is None else f"{claim.step_key}[{claim.index}]",
              "attempt": claim.attempt}
    if claim.attempt > max(claim.max_attempts, MIN_WORKER_LOST_TRIES):
        # Every try so far died with its worker (a step that kills its process?): stop redelivering.
        outcome = runs.fail_task(
            rt.engine, task_id, claim.attempt,
            f"worker lost on each of {claim.attempt - 1} attempts; not retried", None,
        )
        event(logging.ERROR, "step.gave_up", **fields)
        return outcome, None, claimed_from
    handler = rt.registry.handlers.get(claim.handler)
    error: str
    if handler is None:
        error = f"unknown handler {claim.handler!r} in region {rt.region}"
    else:
        ctx = StepContext(
            run_id=claim.run_id, tenant_id=claim.tenant_id, workflow=claim.workflow, step=claim.step_key,
            index=claim.index, attempt=claim.attempt, idempotency_key=claim.idempotency_key,
            region=rt.region, engine=rt.engine, epoch=claim.epoch, lease_until=claim.lease_until,
            fencing_token=fencing_token(claim.epoch, claim.fence_us),
        )
        began = time.perf_counter()
        limit = StepLimit(claim.timeout_s, started=claimed_from, grace_s=rt.config.settings.deadline_slack_s / 2,
                          on_overrun=(lambda: _overran(rt, claim, fields)) if process_end_allowed() else None)
        try:
            with limit:
                output = handler(ctx, claim.payload)
            if limit.fired:  # the handler caught StepTimeout and returned all the same
                raise StepTimeout(f"timed out after {claim.timeout_s:g}s (the handler caught the timeout)")
            json.dumps(output)
        except Park as parked:  # a waiting step (workers/waits.py): back to the database until it is due
            at = waits.park(rt.engine, task_id, claim.attempt, wake_at=parked.wake_at, wait_s=parked.wait_s)
            event(logging.INFO, "step.parked" if at else "step.discarded", wake_at=at and at.isoformat(), **fields)
            return ("parked" if at else "discarded"), None, time.monotonic()
        except StepTimeout as exc:
            error = str(exc)
            STEP_DURATION.labels(rt.region, "timeout").observe(time.perf_counter() - began)
        except Exception as exc:  # a handler's failure is the step's failure
            error = f"{type(exc).__name__}: {exc}"
            STEP_DURATION.labels(rt.region, "error").observe(time.perf_counter() - began)
        else:
            STEP_DURATION.labels(rt.region, "ok").observe(time.perf_counter() - began)
            next_from = time.monotonic()  # before the completion that claims the next task
            done = _complete(rt, claim, output, claim_next=claim_next, until=limit.soft_at, fields=fields)
            if done.discarded:
                event(logging.INFO, "step.discarded", **fields)
                return "discarded", None, next_from
            _publish(rt, done.released)
            event(logging.INFO, "step.succeeded", released=len(done.released) + (done.next_claim is not None), **fields)
            return "succeeded", done.next_claim, next_from
    policy = RetryPolicy(claim.max_attempts, claim.backoff_base_s, claim.backoff_max_s)
    retry_in = backoff_s(policy, claim.attempt, random.random()) if should_retry(policy, claim.attempt) else None
    if handler is None:
        retry_in = None
    outcome = runs.fail_task(rt.engine, task_id, claim.attempt, error, retry_in)
    event(logging.WARNING, f"step.{outcome}", error=error[:200], retry_in=retry_in and round(retry_in, 3), **fields)
    if outcome == "retry" and retry_in is not None and retry_in <= MAX_COUNTDOWN_S:
        _publish(rt, [task_id], countdown=retry_in)
    return outcome, None, time.monotonic()


def _overran(rt: Runtime, claim: runs.Claim, fields: dict[str, Any]) -> None:
    """Record a handler that ran past its timeout plus the grace as a timed-out attempt, retried per
    its policy (called by the step limit's watchdog, which then ends this process)."""
    policy = RetryPolicy(claim.max_attempts, claim.backoff_base_s, claim.backoff_max_s)
    retry_in = None
    if should_retry(policy, claim.attempt):
        retry_in = max(OVERRUN_RETRY_GUARD_S, backoff_s(policy, claim.attempt, random.random()))
    error = f"timed out after {claim.timeout_s:g}s; the handler ran on past it and its process was ended"
    outcome = runs.fail_task(rt.engine, claim.task_id, claim.attempt, error, retry_in)
    event(logging.ERROR, "step.overran", outcome=outcome, retry_in=retry_in and round(retry_in, 3), **fields)
    if outcome == "retry" and retry_in is not None and retry_in <= MAX_COUNTDOWN_S:
        _publish(rt, [claim.task_id], countdown=retry_in)


def _complete(rt: Runtime, claim: runs.Claim, output: Any, *, claim_next: bool, until: float,
              fields: dict[str, Any]) -> runs.Completion:
    """Record a handler's success, retrying the commit through database blips until the task's
    deadline (after it the reconciler may hand the task to another worker): the handler ran once,
    its completion must not be lost, and it must never run again for want of one.

    The retry is safe: the completion is a guarded update on (task, attempt), so a commit that did
    succeed before its reply was lost makes the retry a no-op ('discarded'); what it released is
    then published by the reconciler.
    """
    delay, waited, renewed_tries = 0.1, False, 0
    while True:
        try:
            done = runs.complete_and_claim(rt.engine, claim.task_id, claim.attempt, output,
                                           region=rt.region, worker=rt.worker_id, claim_next=claim_next and not waited)
            may = done.discarded and time.monotonic() + delay < until and _lease_may_return(rt)
            if (done.discarded and not may and time.monotonic() + delay < until and renewed_tries < RENEWED_LEASE_TRIES
                    and runs.still_running(rt.engine, claim.task_id, claim.attempt)):
                # The lease came back between the refusal and the look at it (a keeper pass in
                # between: campaign seed 27 discarded a completion 30 ms after its region's lease
                # returned, and the step ran again a minute later). Try again while the task is
                # still this attempt's and the region may work, a few times: a refusal for another
                # reason (the run adopted elsewhere) ends it, and the completion's SQL decides.
                may, renewed_tries = True, renewed_tries + 1
            if may:
                # Refused for want of a lease that a keeper pass may bring back (a pass late, the
                # database's clock stepped, less lease left than a commit needs): the handler ran;
                # wait for the lease rather than leave the task to run again after its deadline. A fence or a failover ends the wait at
                # once, as does the deadline: then it is the documented crash re-run (README,
                # "Limits"). After a wait nothing more is claimed inline (the budget has passed).
                if not waited:
                    event(logging.WARNING, "step.complete_waits_for_lease", until_s=round(until - time.monotonic(), 1),
                          **fields)
                waited = True
                threading.Event().wait(delay)  # not time.sleep: libfaketime breaks clock_nanosleep
                delay = min(delay * 2, 1.0)
                continue
            return done
        except DBAPIError as exc:
            transient = isinstance(exc, OperationalError) or exc.connection_invalidated
            if not transient or time.monotonic() + delay >= until:
                raise
            event(logging.WARNING, "step.complete_retry", error=type(exc.orig or exc).__name__,
                  retry_in=round(delay, 2), **fields)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


# Completions tried again after a refusal, once the lease is seen held again (see _complete).
RENEWED_LEASE_TRIES = 3


def _lease_may_return(rt: Runtime) -> bool:
    """Whether a completion refused for want of lease may commit once a keeper pass renews it:
    the lease lapsed (no fence, no failover), or it still runs but ends within the commit margin,
    where rm_guard_work refuses what rm_may_work would still allow (0021)."""
    return lease.lease_lapsed(rt.engine, rt.region) or runs.lease_within_commit_margin(rt.engine)


def _publish(rt: Runtime, task_ids: list[uuid.UUID], countdown: float | None = None) -> None:
    try:
        rt.publish_steps(task_ids, countdown=countdown)
    except Exception as exc:  # the reconciler republishes what stays queued
        event(logging.WARNING, "publish.failed", region=rt.region, count=len(task_ids), error=exc)
