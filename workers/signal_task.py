"""``regionmesh.signal``: a signal to a running workflow, accepted on any region's submit queue.

kwargs: ``tenant_id``, ``run_id`` (or ``idempotency_key``, the run's, from which the run id
follows), ``name``, ``payload`` (JSON, optional), ``key`` (optional; default the message's task
id, stable across a producer's transport retries), ``v`` = 1.

A signal is a replicated fact, not a message to route hop by hop: the region that receives it
keeps it in ``run_signals`` (idempotent by tenant, run, name and key) and replication brings it to
the run's owner, whose ticker wakes the waiting step; before the wait starts, or before the run
exists there, it stays buffered. Two exceptions: a zoned tenant's signal received outside its zone
is passed to a region of the zone without touching this region's database (its payload never
leaves the zone; the message waits in this broker while the zone's is unreachable), and an
erased tenant's signal is a dead letter. A signal for a finished run, or for a run that never
appears within ``ORPHAN_SIGNAL_S``, is marked dead with a reason by the region that answers for it.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, Retry

from regionmesh.backoff import compute_backoff
from regionmesh.broker import publisher
from regionmesh.log import event
from regionmesh.models import waits
from regionmesh.names import SIGNAL_TASK, submit_queue
from regionmesh.workers.definitions import STEP_KEY_RE
from regionmesh.workers.forward import PUBLISH_ERRORS
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import KEY_MAX, TENANT_RE, run_id_for
from regionmesh.workers.tasks import is_transient, reject_task_message, retry_later

PROTOCOL_VERSION = 1


class BadSignal(ValueError):
    pass


def parse_signal(kwargs: dict[str, Any], *, default_key: str | None, max_bytes: int) -> dict[str, Any]:
    """The signal a message carries, checked. Raises BadSignal with the reason."""
    tenant = kwargs.get("tenant_id")
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise BadSignal("tenant_id: letters, digits, '.', '_', '-' (1-128)")
    name = kwargs.get("name")
    if not isinstance(name, str) or not STEP_KEY_RE.fullmatch(name):
        raise BadSignal("name: letters, digits, '_', '-' (max 64), starting with a letter or '_'")
    if kwargs.get("run_id") is not None:
        try:
            run_id = uuid.UUID(str(kwargs["run_id"]))
        except ValueError:
            raise BadSignal("run_id is not a UUID") from None
    elif isinstance(kwargs.get("idempotency_key"), str) and 0 < len(kwargs["idempotency_key"]) <= KEY_MAX:
        run_id = run_id_for(tenant, kwargs["idempotency_key"])
    else:
        raise BadSignal("give run_id or the run's idempotency_key")
    key = kwargs.get("key") if kwargs.get("key") is not None else default_key
    if not isinstance(key, str) or not (0 < len(key) <= KEY_MAX) or "\x00" in key:
        raise BadSignal(f"key: a non-empty string of at most {KEY_MAX} characters")
    payload = kwargs.get("payload")
    try:
        size = len(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError):
        raise BadSignal("payload is not JSON") from None
    if size > max_bytes:
        raise BadSignal(f"payload of {size} bytes exceeds {max_bytes}")
    if "\\u0000" in json.dumps(payload):
        raise BadSignal("payload contains NUL, which PostgreSQL jsonb cannot store")
    return {"tenant_id": tenant, "run_id": run_id, "name": name, "key": key, "payload": payload}


def accept(rt: Runtime, signal: dict[str, Any], message: dict[str, Any]) -> str:
    """Keep the signal here, or pass it into its tenant's zone. Returns 'accepted', 'duplicate',
    'passed' or 'waiting' (the zone's broker is unreachable: the caller retries the message)."""
    placement = rt.router.place(signal["tenant_id"], fresh=True)
    if placement.erased:
        raise BadSignal("tenant was erased (regionmesh tenants erase); its signals are refused")
    if placement.zone and rt.region not in placement.zone_regions:
        target = placement.region if placement.region in placement.zone_regions else placement.zone_regions[0]
        queue = submit_queue(target)
        try:
            publisher(rt.config.regions[target].broker_url, rt.config.settings).send_task(
                SIGNAL_TASK, kwargs=message | {"key": signal["key"]}, queue=queue, routing_key=queue,
                task_id=str(uuid.uuid5(signal["run_id"], signal["name"] + "\x1f" + signal["key"])))
        except PUBLISH_ERRORS as exc:
            event(logging.WARNING, "signal.zone_unreachable", region=rt.region, tenant=signal["tenant_id"],
                  target=target, error=type(exc).__name__)
            return "waiting"
        return "passed"
    kept = waits.accept_signal(rt.engine, region=rt.region, **signal)
    event(logging.INFO, "signal.accepted" if kept else "signal.duplicate", region=rt.region,
          tenant=signal["tenant_id"], run=signal["run_id"], signal=signal["name"])
    return "accepted" if kept else "duplicate"


def register_signal_task(app: Celery, rt: Runtime) -> None:
    @app.task(name=SIGNAL_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None, shared=False)
    def signal(self: Task, *args: Any, **kwargs: Any) -> str:
        try:
            if args:
                raise BadSignal("positional arguments are not accepted; send keyword arguments")
            parsed = parse_signal(kwargs, default_key=self.request.id, max_bytes=rt.config.max_input_bytes)
            outcome = accept(rt, parsed, kwargs)
            if outcome == "waiting":
                retry_later(self, 2)
            return outcome
        except (Retry, Reject):
            raise
        except BadSignal as exc:
            reject_task_message(rt, self, f"signal refused: {exc}", args, kwargs)
            return "rejected"
        except Exception as exc:
            if is_transient(exc):
                retry_later(self, compute_backoff(self.request.retries + 1, base_s=1.0, max_s=30, jitter=random.random()),
                            exc)
            raise
