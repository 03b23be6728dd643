"""Fair dispatch in a worker (issue 22): take the fairest tenant's next task, run it, charge its
worker time; then the next, within the inline budget.

With fairness on, a ``run_step`` message is a wake-up: it says "a task is queued in this region",
not which one runs. Every queued task has one message (published with it, as with fairness off),
and each wake-up claims the fairest task, so no task waits for its own message. A wake-up that
finds every waiting tenant held back by a limit waits for it within the budget, then hands itself
on (published again, due when the limit allows). A chain continues inline (one transaction per
step, as with fairness off) only while its tenant was the only one eligible and has no limits,
for at most ``ALONE_S``; otherwise every step goes through the choice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from regionmesh.log import event
from regionmesh.models import fairness as store
from regionmesh.workers import fairness
from regionmesh.workers.executor import INLINE_BUDGET_S, MAX_INLINE_STEPS, _run_claimed
from regionmesh.workers.metrics import FAIR_THROTTLED, FAIR_WAIT
from regionmesh.workers.runtime import Runtime

ALONE_S = 0.1  # how long a lone tenant's chain runs inline before the choice is made again
MAX_LIMIT_WAIT_S = 0.25  # one wait for a limit, before looking at every tenant again
MAX_MISSES = 3  # choices in a row that claimed nothing (a race, a stale queue row) before giving up


def execute(rt: Runtime, task_id: uuid.UUID, budget_s: float = INLINE_BUDGET_S) -> str:
    """Run the region's fairest queued tasks for up to ``budget_s`` (this wake-up was published
    for ``task_id``). Returns the first task's outcome, or 'skipped' when nothing was claimable."""
    region, engine = rt.region, rt.engine
    end = time.monotonic() + budget_s
    first: str | None = None
    steps = misses = 0
    held_by: str | None = None
    held_wait = 0.0
    while steps < MAX_INLINE_STEPS and misses < MAX_MISSES:
        now = time.monotonic()
        if now >= end:
            break
        found = [fairness.Candidate.from_row(c) for c in store.candidates(engine, region)]
        choice = fairness.choose(found, rt.config.settings.fair_aging_s)
        held_by, held_wait = choice.blocked, choice.wait_s
        if not choice.order:
            if choice.blocked is None:
                break  # nothing queued and due
            FAIR_THROTTLED.labels(region, choice.blocked).inc()
            if now + choice.wait_s >= end:
                break
            threading.Event().wait(min(max(choice.wait_s, 0.01), MAX_LIMIT_WAIT_S))
            continue
        limited = {c.tenant_id for c in found if c.limited}
        taken: store.Taken | None = None
        claimed_from = time.monotonic()
        for tenant in choice.order:
            claimed_from = time.monotonic()
            got = store.take(engine, region, tenant, rt.worker_id)
            if got.blocked == "no_lease":
                return first or "skipped"
            if got.claim is not None:
                taken = got
                break
            if got.blocked in ("concurrency", "rate"):
                FAIR_THROTTLED.labels(region, got.blocked).inc()
        if taken is None or taken.claim is None:
            misses += 1
            continue
        misses = 0
        held_by = None
        claim = taken.claim
        FAIR_WAIT.labels(region, str(taken.band)).observe(taken.waited_s)
        alone = not choice.contended and claim.tenant_id not in limited
        alone_until = min(end, time.monotonic() + ALONE_S)
        began = time.perf_counter()
        steps += 1
        outcome, nxt, claimed_from = _run_claimed(rt, claim, claim_next=alone and steps < MAX_INLINE_STEPS,
                                                  claimed_from=claimed_from)
        first = first or outcome
        while nxt is not None:  # the lone tenant's chain, one transaction per step
            steps += 1
            keep = steps < MAX_INLINE_STEPS and time.monotonic() < alone_until
            _, nxt, claimed_from = _run_claimed(rt, nxt, claim_next=keep, claimed_from=claimed_from)
        try:
            store.charge(engine, region, claim.tenant_id, time.perf_counter() - began, taken.estimate_s)
        except Exception as exc:  # accounting only: the work is done and recorded
            event(logging.WARNING, "fair.charge_failed", region=region, tenant=claim.tenant_id, error=type(exc).__name__)
    if held_by is not None:
        # Every waiting tenant is held back by a limit: hand this wake-up on, due when it may pass.
        rt.publish_steps([task_id], countdown=max(held_wait, 0.05))
    return first or "skipped"
