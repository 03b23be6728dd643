"""The producer side: ``from regionmesh import submit``.

Publishes ``regionmesh.submit`` to a region's ``rm.<region>.submit`` queue and
returns at once with the run id, which is deterministic: UUIDv5 of
(tenant, idempotency key), so the caller can poll any region for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery

from regionmesh.config import MeshConfig, load_config
from regionmesh.workers.names import SUBMIT_TASK, submit_queue
from regionmesh.workers.submission import PROTOCOL_VERSION, run_id_for


@dataclass(frozen=True)
class Receipt:
    run_id: uuid.UUID
    region: str  # where it was submitted
    submission_id: str
    idempotency_key: str
    home_region: str | None = None  # where it will run, as the submitting region's registry says


_routers: dict[tuple[str, str], Any] = {}


def kwargs_summary(kwargs: dict[str, Any]) -> str:
    """What Flower and the logs show of a submission: who and what, never the input's content."""
    import json

    shown = {k: kwargs.get(k) for k in ("tenant_id", "workflow", "idempotency_key", "submission_id") if kwargs.get(k)}
    shown["input"] = f"<{len(json.dumps(kwargs.get('input'), default=str))} bytes>"
    return repr(shown)


def home_region(config: MeshConfig, tenant_id: str, via: str) -> str | None:
    """The tenant's home as region ``via``'s copy of the registry says (None if unreachable)."""
    from regionmesh.models.engine import make_engine
    from regionmesh.routing.router import Router

    key = (config.path, via)
    router = _routers.get(key)
    if router is None:
        engine = make_engine(config.regions[via].database_url, region=via, pool_size=1, connect_timeout=3)
        router = _routers[key] = Router(engine, list(config.regions))
    try:
        return str(router.place(tenant_id).region)
    except Exception:  # an unreachable database: the worker still routes it
        return None


@lru_cache(maxsize=32)
def publisher(broker_url: str) -> Celery:
    """A publishing-only Celery app for one broker (cached; JSON only, bounded timeouts)."""
    from regionmesh.workers.app import broker_options

    app = Celery("regionmesh-producer", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options=broker_options(broker_url),
        task_serializer="json",
        accept_content=["json"],
        broker_connection_timeout=5,
        broker_connection_max_retries=3,
    )
    return app


def submit(
    tenant_id: str,
    workflow: str,
    input: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    region: str | None = None,
    config: MeshConfig | None = None,
    submission_id: str | None = None,
    resolve_home: bool = True,
) -> Receipt:
    """Submit a run to ``region`` (default: the local region). Returns its receipt.

    The worker validates the message; bad input ends in that region's dead_letters.
    """
    config = config or load_config()
    target = config.regions[region] if region else config.local
    sid = submission_id or str(uuid.uuid4())
    key = idempotency_key or sid
    kwargs = {
        "v": PROTOCOL_VERSION,
        "tenant_id": tenant_id,
        "workflow": workflow,
        "input": input,
        "idempotency_key": idempotency_key,
        "submission_id": sid,
        "submitted_region": target.name,
    }
    queue = submit_queue(target.name)
    publisher(target.broker_url).send_task(
        SUBMIT_TASK, kwargs=kwargs, queue=queue, routing_key=queue, task_id=sid, kwargsrepr=kwargs_summary(kwargs),
        retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )
    home = home_region(config, tenant_id, target.name) if resolve_home else None
    return Receipt(run_id=run_id_for(tenant_id, key), region=target.name, submission_id=sid, idempotency_key=key,
                   home_region=home)
