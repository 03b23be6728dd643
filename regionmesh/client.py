"""The producer side: ``from regionmesh import submit``.

Publishes ``regionmesh.submit`` to a region's ``rm.<region>.submit`` queue and
returns at once with the run id, which is deterministic: UUIDv5 of
(tenant, idempotency key), so the caller can poll any region for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from regionmesh.broker import publisher
from regionmesh.config import MeshConfig, load_config
from regionmesh.models.engine import engine_for
from regionmesh.names import SUBMIT_TASK, submit_queue
from regionmesh.routing.router import Router
from regionmesh.workers.submission import PROTOCOL_VERSION, kwargs_summary, run_id_for


@dataclass(frozen=True)
class Receipt:
    run_id: uuid.UUID
    region: str  # where it was submitted
    submission_id: str
    idempotency_key: str
    home_region: str | None = None  # where it will run, as the submitting region's registry says


_routers: dict[tuple[str, str], Router] = {}


def home_region(config: MeshConfig, tenant_id: str, via: str) -> str | None:
    """The tenant's home as region ``via``'s copy of the registry says (None if unreachable)."""
    key = (config.path, via)
    router = _routers.get(key)
    if router is None:
        router = _routers[key] = Router(engine_for(config, via), list(config.regions))
    try:
        return str(router.place(tenant_id).region)
    except Exception:  # an unreachable database: the worker still routes it
        return None


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
    publisher(target.broker_url, config.settings).send_task(
        SUBMIT_TASK, kwargs=kwargs, queue=queue, routing_key=queue, task_id=sid, kwargsrepr=kwargs_summary(kwargs),
        retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )
    home = home_region(config, tenant_id, target.name) if resolve_home else None
    return Receipt(run_id=run_id_for(tenant_id, key), region=target.name, submission_id=sid, idempotency_key=key,
                   home_region=home)
