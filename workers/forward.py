"""Forwarding a submission to its home region's broker, and the outbox that keeps it when
that broker is unreachable.

The submission id travels on every hop (it is the Celery task id too), and
the run id is derived from (tenant, key): a message forwarded twice is still
one run. ``hops`` bounds forwarding while regions disagree about a home
(registry changes replicate with a lag).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Any

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from regionmesh.backoff import compute_backoff
from regionmesh.broker import publisher
from regionmesh.log import event
from regionmesh.models import outbox
from regionmesh.models.registry import region_statuses
from regionmesh.names import SUBMIT_TASK, submit_queue
from regionmesh.workers.metrics import FORWARD_LATENCY, SUBMISSIONS
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import kwargs_summary

MAX_HOPS = 3
OUTBOX_BACKOFF_MAX_S = 30.0
PUBLISH_ERRORS = (KombuOperationalError, RedisError, OSError, TimeoutError)


def publish_to(rt: Runtime, region: str, message: dict[str, Any]) -> None:
    """Publish ``regionmesh.submit`` on ``region``'s broker (bounded connect time, short retry).

    Raises one of PUBLISH_ERRORS when the broker is unreachable.
    """
    queue = submit_queue(region)
    publisher(rt.config.regions[region].broker_url, rt.config.settings).send_task(
        SUBMIT_TASK, kwargs=message, queue=queue, routing_key=queue, task_id=message.get("submission_id"),
        kwargsrepr=kwargs_summary(message),
        retry=True, retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
    )


def publish_local(rt: Runtime, message: dict[str, Any]) -> None:
    """Hand a submission to this region's own submit queue (its home moved here)."""
    queue = submit_queue(rt.region)
    rt.app.send_task(SUBMIT_TASK, kwargs=message, queue=queue, routing_key=queue,
                     task_id=message.get("submission_id"))


def forward(rt: Runtime, home: str, message: dict[str, Any], run_id: uuid.UUID) -> str:
    """Send to ``home`` and keep it until its run arrives here; if the home broker is
    unreachable keep it unsent. Returns 'forwarded' or 'outbox'."""
    message = dict(message, hops=int(message.get("hops", 0)) + 1, forwarded_by=rt.region)
    fields = {"region": rt.region, "tenant": message.get("tenant_id"), "home": home,
              "submission": message.get("submission_id")}
    began = time.perf_counter()
    try:
        publish_to(rt, home, message)
        FORWARD_LATENCY.labels(rt.region, home).observe(time.perf_counter() - began)
    except PUBLISH_ERRORS as exc:
        SUBMISSIONS.labels(rt.region, "outboxed").inc()
        outbox.put(rt.engine, submission_id=str(message["submission_id"]), run_id=run_id, target_region=home,
                   task_name=SUBMIT_TASK, payload=message, error=f"{type(exc).__name__}: {exc}", sent=False)
        event(logging.WARNING, "submit.outboxed", error=exc, **fields)
        return "outbox"
    outbox.put(rt.engine, submission_id=str(message["submission_id"]), run_id=run_id, target_region=home,
               task_name=SUBMIT_TASK, payload=message, error=None, sent=True, confirm_within_s=rt.config.settings.forward_confirm_s)
    SUBMISSIONS.labels(rt.region, "forwarded").inc()
    event(logging.INFO, "submit.forwarded", **fields)
    return "forwarded"


def _send(rt: Runtime, entry: dict[str, Any], down: set[str]) -> bool | None:
    """(Re)send one kept submission to its tenant's current home. True sent, False failed, None skipped."""
    tenant = entry["payload"].get("tenant_id")
    target = rt.router.place(tenant).region if isinstance(tenant, str) else entry["target_region"]
    if target in down:
        return None
    try:
        if target == rt.region:
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
