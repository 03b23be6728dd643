"""The home's receipt for a zoned tenant's submission forwarded from a region outside its zone.

A forwarder keeps a sent submission in its outbox, input included, until its run arrives by
replication. A zoned tenant's run row never reaches a region outside the zone; its summary does,
but only over the link from the home, which may be cut while the brokers still answer. So when the
home creates (or already has) such a run from a forwarded message, it publishes a small
``regionmesh.received.v1`` notice (ids only, never the input) to the forwarder's submit queue,
and the forwarder drops its entry of that run: the broker path closes what replication cannot.

Only for a forwarder outside the tenant's zone as the home sees it (a forwarder that had not
applied the binding yet: inside the zone, or for an unzoned tenant, the run row arrives by
replication). A lost notice costs nothing but time: the summary, the zone scrub or the outbox's
``MAX_SENDS`` still end the entry.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from regionmesh.broker import publisher
from regionmesh.log import event
from regionmesh.models import outbox
from regionmesh.names import RECEIVED_TASK, submit_queue
from regionmesh.workers.forward import PUBLISH_ERRORS, SEND_RETRY
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.submission import REGION_RE, SUBMISSION_ID_RE


@dataclass(frozen=True)
class ReceiptNotice:
    """The home's word that a forwarded submission is a run there."""

    region: str
    run_id: uuid.UUID
    submission_id: str | None

    def message(self) -> dict[str, Any]:
        return {"region": self.region, "run_id": str(self.run_id), "submission_id": self.submission_id}


def parse(kwargs: dict[str, Any], regions: set[str]) -> ReceiptNotice | None:
    """A receipt from a known region, or None if it is malformed. Pure."""
    region, run, sid = kwargs.get("region"), kwargs.get("run_id"), kwargs.get("submission_id")
    if not isinstance(region, str) or not REGION_RE.fullmatch(region) or region not in regions:
        return None
    if sid is not None and (not isinstance(sid, str) or not SUBMISSION_ID_RE.fullmatch(sid)):
        return None
    if not isinstance(run, str):
        return None
    try:
        return ReceiptNotice(region, uuid.UUID(run), sid)
    except ValueError:
        return None


def owed_to(rt: Runtime, forwarder: object, tenant_id: str) -> str | None:
    """The forwarder to tell, if it is another known region outside the tenant's zone; else None."""
    if not isinstance(forwarder, str) or forwarder == rt.region or forwarder not in rt.config.regions:
        return None
    binding, _ = rt.router.facts(tenant_id)
    return forwarder if binding is not None and forwarder not in binding.regions else None


def acknowledge(rt: Runtime, forwarder: object, tenant_id: str, run_id: uuid.UUID, submission_id: str | None) -> bool:
    """Tell ``forwarder`` that its forwarded submission is run ``run_id`` here, when it is owed
    (see :func:`owed_to`). False when not owed or its broker is unreachable (nothing else to do)."""
    to = owed_to(rt, forwarder, tenant_id)
    if to is None:
        return False
    queue = submit_queue(to)
    try:
        publisher(rt.config.regions[to].broker_url, rt.config.settings).send_task(
            RECEIVED_TASK, kwargs=ReceiptNotice(rt.region, run_id, submission_id).message(), queue=queue,
            routing_key=queue, retry=True, retry_policy=SEND_RETRY,
        )
    except PUBLISH_ERRORS as exc:
        event(logging.WARNING, "submit.receipt_not_sent", region=rt.region, tenant=tenant_id, run=run_id,
              submission=submission_id, to=to, error=type(exc).__name__)
        return False
    return True


def record(rt: Runtime, notice: ReceiptNotice) -> int:
    """Drop this region's outbox entry of the run the home received. Returns entries dropped."""
    dropped = outbox.confirm_run(rt.engine, notice.run_id)
    event(logging.INFO, "outbox.received", region=rt.region, run=notice.run_id, submission=notice.submission_id,
          home=notice.region, dropped=dropped)
    return dropped
