"""Forwarding a submission to its home region's broker, and the outbox that keeps it when
that broker is unreachable.

The submission id travels on every hop (it is the Celery task id too), and
the run id is derived from (tenant, key): a message forwarded twice is still
one run. ``hops`` bounds forwarding while regions disagree about a home
(registry changes replicate with a lag).

A forwarded submission the home rejects comes back: the home publishes a small
``regionmesh.rejected.v1`` notice (ids and the reason, never the input) to the forwarder's
submit queue, and the forwarder marks its outbox entry rejected; it is never sent again.
If the notice is lost, an entry whose run has not arrived after ``MAX_SENDS`` sends is
marked rejected too ("never arrived"), so nothing is re-sent forever.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from regionmesh.backoff import compute_backoff
from regionmesh.broker import publisher
from regionmesh.log import event
from regionmesh.models import outbox
from regionmesh.models.registry import region_statuses
from regionmesh.names import REJECTED_TASK, SUBMIT_TASK, submit_queue
from regionmesh.workers.metrics import FORWARD_LATENCY, SUBMISSIONS
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import REGION_RE, SUBMISSION_ID_RE, TENANT_RE, kwargs_summary

OUTBOX_BACKOFF_MAX_S = 30.0
MAX_SENDS = 10  # with forward_confirm_s = 60 s: ten minutes without the run arriving
REASON_MAX = 2000
PUBLISH_ERRORS = (KombuOperationalError, RedisError, OSError, TimeoutError)
# A send to another region's broker: one quick retry, then the caller keeps or re-queues it.
SEND_RETRY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3}


def publish_to(rt: Runtime, region: str, message: dict[str, Any]) -> None:
    """Publish ``regionmesh.submit`` on ``region``'s broker (bounded connect time, short retry).

    Raises one of PUBLISH_ERRORS when the broker is unreachable.
    """
    queue = submit_queue(region)
    publisher(rt.config.regions[region].broker_url, rt.config.settings).send_task(
        SUBMIT_TASK, kwargs=message, queue=queue, routing_key=queue, task_id=message.get("submission_id"),
        kwargsrepr=kwargs_summary(message),
        retry=True, retry_policy=SEND_RETRY,
    )


def publish_local(rt: Runtime, message: dict[str, Any]) -> None:
    """Hand a submission to this region's own submit queue (its home moved here)."""
    queue = submit_queue(rt.region)
    rt.app.send_task(SUBMIT_TASK, kwargs=message, queue=queue, routing_key=queue,
                     task_id=message.get("submission_id"), kwargsrepr=kwargs_summary(message))


@dataclass(frozen=True)
class Outgoing:
    """A submission on its way from this region to its home: the message as sent (one hop more,
    and who forwarded it) and the ids every log line about it carries."""

    message: dict[str, Any]
    log: dict[str, Any]


def outgoing(message: dict[str, Any], here: str, home: str) -> Outgoing:
    """What region ``here`` sends on to ``home`` for a submission it received. Pure."""
    sent = dict(message, hops=int(message.get("hops", 0)) + 1, forwarded_by=here)
    return Outgoing(sent, {"region": here, "tenant": sent.get("tenant_id"), "home": home,
                           "submission": sent.get("submission_id")})


def _publish_timed(rt: Runtime, home: str, message: dict[str, Any]) -> None:
    """:func:`publish_to`, recording how long a successful send took."""
    began = time.perf_counter()
    publish_to(rt, home, message)
    FORWARD_LATENCY.labels(rt.region, home).observe(time.perf_counter() - began)


def forward(rt: Runtime, home: str, message: dict[str, Any], run_id: uuid.UUID) -> str:
    """Send to ``home`` and keep it until its run arrives here; if the home broker is
    unreachable keep it unsent. Returns 'forwarded' or 'outbox'."""
    out = outgoing(message, rt.region, home)
    try:
        _publish_timed(rt, home, out.message)
    except PUBLISH_ERRORS as exc:
        SUBMISSIONS.labels(rt.region, "outboxed").inc()
        kept = outbox.put(rt.engine, submission_id=str(out.message["submission_id"]), run_id=run_id,
                          target_region=home, task_name=SUBMIT_TASK, payload=out.message,
                          error=f"{type(exc).__name__}: {exc}", sent=False)
        # Not kept: this run (same tenant and key) is already kept here, and will be sent.
        event(logging.WARNING, "submit.outboxed" if kept else "submit.already_kept", error=exc, **out.log)
        return "outbox"
    kept = outbox.put(rt.engine, submission_id=str(out.message["submission_id"]), run_id=run_id, target_region=home,
                      task_name=SUBMIT_TASK, payload=out.message, error=None, sent=True,
                      confirm_within_s=rt.config.settings.forward_confirm_s)
    SUBMISSIONS.labels(rt.region, "forwarded").inc()
    event(logging.INFO, "submit.forwarded" if kept else "submit.forwarded_again", **out.log)
    return "forwarded"


def pass_on(rt: Runtime, home: str, message: dict[str, Any]) -> str:
    """Send a zoned tenant's submission from a region outside its zone to ``home`` (in the zone)
    without keeping it here: its input never touches this region's database (data residency).
    Returns 'forwarded', or 'waiting' when the home's broker is unreachable: the caller lets the
    message wait in this region's broker and come back (it is not acked)."""
    out = outgoing(message, rt.region, home)
    try:
        _publish_timed(rt, home, out.message)
    except PUBLISH_ERRORS as exc:
        event(logging.WARNING, "submit.zone_unreachable", error=type(exc).__name__, **out.log)
        return "waiting"
    SUBMISSIONS.labels(rt.region, "forwarded").inc()
    event(logging.INFO, "submit.passed_to_zone", **out.log)
    return "forwarded"


def hold(rt: Runtime, home: str, message: dict[str, Any], run_id: uuid.UUID, reason: str) -> str:
    """Keep a submission unsent instead of forwarding it again (it went round too often while the
    regions disagreed about its home); the outbox sends it on with backoff. Returns 'outbox'."""
    SUBMISSIONS.labels(rt.region, "outboxed").inc()
    kept = outbox.put(rt.engine, submission_id=str(message["submission_id"]), run_id=run_id, target_region=home,
                      task_name=SUBMIT_TASK, payload=message, error=reason, sent=False)
    event(logging.WARNING, "submit.held" if kept else "submit.already_kept", region=rt.region,
          tenant=message.get("tenant_id"), home=home, submission=message.get("submission_id"), reason=reason)
    return "outbox"

Action = Literal["send", "send_local", "skip", "give_up"]


def next_action(entry: dict[str, Any], target: str, *, here: str, down: set[str], max_sends: int = MAX_SENDS) -> Action:
    """What to do with a kept entry whose tenant's home is now ``target``. Pure.

    ``give_up``: it was sent ``max_sends`` times and its run never arrived (record a rejection);
    ``skip``: the target's broker already failed in this pass; ``send_local``: the home moved here.
    """
    if entry.get("sent") and int(entry.get("sends") or 0) >= max_sends:
        return "give_up"
    if target in down:
        return "skip"
    return "send_local" if target == here else "send"


def _send(rt: Runtime, entry: dict[str, Any], down: set[str]) -> bool | None:
    """(Re)send one kept submission to its tenant's current home. True sent, False failed, None skipped."""
    tenant = entry["payload"].get("tenant_id")
    target = rt.router.place(tenant).region if isinstance(tenant, str) else entry["target_region"]
    action = next_action(entry, target, here=rt.region, down=down)
    if action == "give_up":
        reason = f"no run arrived after {entry.get('sends')} sends; see dead letters in {entry['target_region']}"
        if outbox.reject(rt.engine, reason, entry_id=entry["id"]):
            event(logging.ERROR, "outbox.gave_up", region=rt.region, tenant=tenant, run=entry["run_id"],
                  submission=entry["submission_id"], home=entry["target_region"])
        return None
    if action == "skip":
        return None
    try:
        if action == "send_local":
            publish_local(rt, entry["payload"])  # its home moved here
        else:
            publish_to(rt, target, entry["payload"])
    except PUBLISH_ERRORS as exc:
        delay = compute_backoff(entry["attempts"] + 1, base_s=0.5, max_s=OUTBOX_BACKOFF_MAX_S, jitter=random.random())
        outbox.failed(rt.engine, entry["id"], f"{type(exc).__name__}: {exc}", delay)
        down.add(target)
        return False
    outbox.mark_sent(rt.engine, entry["id"], target, rt.config.settings.forward_confirm_s)
    return True


def drain_outbox(rt: Runtime, limit: int = 200) -> tuple[int, int]:
    """One pass: forget what arrived, send what is due, re-send what went to a region that
    is no longer active (failed over, draining). Returns (sent, still failing)."""
    outbox.confirm_arrived(rt.engine)
    sent = failing = 0
    down: set[str] = set()
    entries = outbox.due(rt.engine, limit)
    statuses = region_statuses(rt.engine)
    for region, status in statuses.items():
        if status != "active" and region != rt.region:
            entries += outbox.sent_to(rt.engine, region)
    seen: set[int] = set()
    for entry in entries:
        if entry["id"] in seen:
            continue
        seen.add(entry["id"])
        result = _send(rt, entry, down)
        sent += result is True
        failing += result is False
    if sent:
        event(logging.INFO, "outbox.sent", region=rt.region, count=sent)
    return sent, failing


@dataclass(frozen=True)
class RejectionNotice:
    """The home's word that a forwarded submission will not become a run."""

    region: str
    reason: str
    submission_id: str | None
    run_id: uuid.UUID | None
    tenant_id: str | None

    def message(self) -> dict[str, Any]:
        return {"region": self.region, "reason": self.reason, "submission_id": self.submission_id,
                "run_id": None if self.run_id is None else str(self.run_id), "tenant_id": self.tenant_id}


def parse_notice(kwargs: dict[str, Any], regions: set[str]) -> RejectionNotice | None:
    """A rejection notice from a known region, or None if it is malformed. Pure."""
    region, reason = kwargs.get("region"), kwargs.get("reason")
    sid, run, tenant = kwargs.get("submission_id"), kwargs.get("run_id"), kwargs.get("tenant_id")
    if not isinstance(region, str) or not REGION_RE.fullmatch(region) or region not in regions:
        return None
    if not isinstance(reason, str) or not reason.isprintable() or "\x00" in reason:
        return None
    if sid is not None and (not isinstance(sid, str) or not SUBMISSION_ID_RE.fullmatch(sid)):
        return None
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant)):
        return None
    try:
        run_id = None if run is None else uuid.UUID(str(run))
    except ValueError:
        return None
    if run_id is None and sid is None:
        return None
    return RejectionNotice(region, reason[:REASON_MAX], sid, run_id, tenant)


def notify_rejection(rt: Runtime, forwarder: str, notice: RejectionNotice) -> bool:
    """Tell the region that forwarded a submission that it was rejected here. False if its broker
    is unreachable (its outbox gives up after ``MAX_SENDS`` anyway)."""
    queue = submit_queue(forwarder)
    try:
        publisher(rt.config.regions[forwarder].broker_url, rt.config.settings).send_task(
            REJECTED_TASK, kwargs=notice.message(), queue=queue, routing_key=queue,
            retry=True, retry_policy=SEND_RETRY,
        )
    except PUBLISH_ERRORS as exc:
        event(logging.WARNING, "submit.rejection_not_sent", region=rt.region, tenant=notice.tenant_id,
              submission=notice.submission_id, to=forwarder, error=type(exc).__name__)
        return False
    return True


def record_rejection(rt: Runtime, notice: RejectionNotice) -> int:
    """Mark the outbox entry of a submission its home rejected. Returns entries marked."""
    marked = outbox.reject(rt.engine, f"rejected by {notice.region}: {notice.reason}",
                           run_id=notice.run_id, submission_id=notice.submission_id)
    event(logging.WARNING if marked else logging.INFO, "outbox.rejected", region=rt.region, tenant=notice.tenant_id,
          run=notice.run_id, submission=notice.submission_id, home=notice.region, marked=marked, reason=notice.reason)
    return marked
