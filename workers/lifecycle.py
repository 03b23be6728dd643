"""Starting, cancelling and retrying runs: the service functions tasks and the CLI call."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from regionmesh.errors import InvalidTransition, RejectedSubmission, RunNotFound
from regionmesh.log import event
from regionmesh.models import fairness as fair_store
from regionmesh.models import runs
from regionmesh.workers import forward
from regionmesh.workers.fairness import NORMAL
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import Submission, plan_run

MAX_HOPS = 3  # forwards a submission may take while regions disagree about a tenant's home


@dataclass(frozen=True)
class Started:
    run_id: uuid.UUID
    created: bool
    status: str  # the run's status; 'no_lease' when this region may not work now
    inline: runs.Claim | None = None  # a ready task claimed for the caller to run
    home: str | None = None  # where it went instead, when it was forwarded or kept
    outcome: str = "started"  # started | duplicate | no_lease | forwarded | outbox
    claimed_from: float = 0.0  # monotonic, taken before the transaction that claimed ``inline``


def route(placed_at: str, me: str, hops: int) -> str:
    """What a region does with a submission: 'create' it here (it is placed here), 'forward' it to
    the region it is placed at, or 'hold' it (kept in the outbox and sent again later: it has been
    forwarded too often, the regions disagree for now). A submission never starts off its home."""
    if placed_at == me:
        return "create"
    return "forward" if hops < MAX_HOPS else "hold"


def accept(rt: Runtime, sub: Submission, *, hops: int, message: dict[str, object], keep_first: bool = False) -> Started:
    """Create the run where its tenant is placed, or send the submission there.

    The run is created only while this region holds its lease and the placement it was computed
    from is still current (rm_place_run); a stale cached placement is computed again once. A
    submission is sent elsewhere (and kept in the outbox) only on a placement read fresh.
    Raises RejectedSubmission for an unknown workflow.
    """
    for fresh in (False, True):
        placement = rt.router.place(sub.tenant_id, fresh=fresh)
        if placement.erased:
            raise RejectedSubmission("tenant was erased (regionmesh tenants erase); its submissions are refused "
                                     "until 'regionmesh tenants erase TENANT --reenable'",
                                     submission_id=sub.submission_id)  # not the tenant id: erased
        if placement.held:  # zoned, and no region of its zone places runs: wait (in the broker)
            event(logging.WARNING, "submission.held_for_zone", region=rt.region, tenant=sub.tenant_id, run=sub.run_id,
                  zone=placement.zone, waits_for=placement.waits_for)
            return Started(sub.run_id, False, "no_lease", outcome="no_lease")
        decision = route(placement.region, rt.region, hops)
        if decision != "create" and not fresh:
            # Forward only on a fresh read: a zone binding that arrived since the cache was filled
            # must be seen before this region keeps the input in its outbox (workers/zone_scrub.py).
            continue
        if placement.zone and rt.region not in placement.zone_regions:
            # Outside the tenant's zone: no outbox (it would keep the input here); the message
            # waits in this broker while the zone's broker is unreachable.
            if forward.pass_on(rt, placement.region, message | {"hops": hops}) == "waiting":
                return Started(sub.run_id, False, "no_lease", outcome="no_lease")
            return Started(sub.run_id, False, "forwarded", home=placement.region, outcome="forwarded")
        if decision != "create":
            outcome = (forward.forward(rt, placement.region, message | {"hops": hops}, sub.run_id)
                       if decision == "forward"
                       else forward.hold(rt, placement.region, message | {"hops": hops}, sub.run_id,
                                         f"forwarded {hops} times; regions disagree about the home for now"))
            return Started(sub.run_id, False, "forwarded", home=placement.region, outcome=outcome)
        run, steps = plan_run(sub, rt.registry, region=rt.region, epoch=placement.epoch)
        if sub.priority is not None and sub.priority != NORMAL:  # before its tasks are queued
            fair_store.set_run_band(rt.engine, sub.run_id, sub.priority)
        claimed_from = time.monotonic()  # the inline claim's time limit counts from here
        placed = runs.place_run(rt.engine, run, steps, version=placement.version,
                                claim_for=(rt.region, rt.worker_id) if keep_first else None)
        if placed.status == "moved":
            event(logging.INFO, "run.placement_changed", region=rt.region, tenant=sub.tenant_id, run=sub.run_id)
            continue
        if placed.status == "no_lease":
            return Started(sub.run_id, False, "no_lease", outcome="no_lease")
        if placed.status == "duplicate":
            event(logging.INFO, "run.duplicate", region=rt.region, tenant=sub.tenant_id, run=sub.run_id,
                  submission=sub.submission_id)
            return Started(sub.run_id, False, runs.run_status(rt.engine, sub.run_id) or "unknown", outcome="duplicate")
        rt.publish_steps(placed.ready)
        event(logging.INFO, "run.created", region=rt.region, tenant=sub.tenant_id, run=sub.run_id,
              workflow=sub.workflow, steps=len(steps), status=run["status"], epoch=placement.epoch,
              error=run.get("error"))
        return Started(sub.run_id, True, str(run["status"]), placed.claim, claimed_from=claimed_from)
    # The placement changed twice while we looked: let the message come back later.
    return Started(sub.run_id, False, "no_lease", outcome="no_lease")


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
