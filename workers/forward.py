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
from typing import Any

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from models import outbox
from workers.log import event
from workers.names import SUBMIT_TASK, submit_queue
from workers.runtime import Runtime

MAX_HOPS = 3
OUTBOX_BACKOFF_MAX_S = 30.0
PUBLISH_ERRORS = (KombuOperationalError, RedisError, OSError, TimeoutError)


def publish_to(rt: Runtime, region: str, message: dict[str, Any]) -> None:
    """Publish ``regionmesh.submit`` on ``region``'s broker (bounded connect time, short retry).

    Raises one of PUBLISH_ERRORS when the broker is unreachable.
    """
    from regionmesh.client import publisher

    queue = submit_queue(region)
    publisher(rt.config.regions[region].broker_url).send_task(
        SUBMIT_TASK, kwargs=message, queue=queue, routing_key=queue, task_id=message.get("submission_id"),
        retry=True, retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
    )


def forward(rt: Runtime, home: str, message: dict[str, Any]) -> str:
    """Send to ``home``; on failure keep it in the outbox. Returns 'forwarded' or 'outbox'."""
    message = dict(message, hops=int(message.get("hops", 0)) + 1, forwarded_by=rt.region)
    fields = {"region": rt.region, "tenant": message.get("tenant_id"), "home": home,
              "submission": message.get("submission_id")}
    try:
        publish_to(rt, home, message)
    except PUBLISH_ERRORS as exc:
        outbox.put(rt.engine, submission_id=str(message["submission_id"]), target_region=home,
                   task_name=SUBMIT_TASK, payload=message, error=f"{type(exc).__name__}: {exc}")
        event(logging.WARNING, "submit.outboxed", error=exc, **fields)
        return "outbox"
    event(logging.INFO, "submit.forwarded", **fields)
    return "forwarded"


def drain_outbox(rt: Runtime, limit: int = 200) -> tuple[int, int]:
    """Publish due outbox entries. Returns (delivered, still failing)."""
    sent = failing = 0
    down: set[str] = set()
    for entry in outbox.due(rt.engine, limit):
        target = entry["target_region"]
        if target in down:  # one failure per target per pass is enough
            continue
        try:
            publish_to(rt, target, entry["payload"])
        except PUBLISH_ERRORS as exc:
            delay = min(OUTBOX_BACKOFF_MAX_S, 0.5 * 2 ** min(entry["attempts"], 6)) * (0.5 + random.random() / 2)
            outbox.failed(rt.engine, entry["id"], f"{type(exc).__name__}: {exc}", delay)
            down.add(target)
            failing += 1
            continue
        outbox.delivered(rt.engine, entry["id"])
        sent += 1
    if sent:
        event(logging.INFO, "outbox.drained", region=rt.region, delivered=sent)
    return sent, failing
