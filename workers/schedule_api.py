"""Schedules and signals from Python (what ``regionmesh schedules`` and ``regionmesh signal`` call).

    from regionmesh.workers.schedule_api import add_schedule, send_signal
    add_schedule(config, "acme", "nightly", cron="0 2 * * *", tz="Europe/Berlin",
                 workflow="etl", input={"day": "yesterday"}, catch_up="latest")
    send_signal(config, "acme", run_id, "approved", payload={"by": "ops"}, key="ticket-42")

A schedule is written in one region (``via``: the local region by default) and replicates; a
zoned tenant's schedule is written in a region of its zone (its input stays there). The region
that places the tenant fires its ticks (workers/ticker.py). A signal is published like a
submission: on a region's submit queue as ``regionmesh.signal`` (workers/signal_task.py).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from regionmesh.broker import publisher
from regionmesh.client import submit, zone_region
from regionmesh.config import MeshConfig
from regionmesh.errors import InvalidSchedule, ScheduleNotFound
from regionmesh.models import schedules
from regionmesh.models.engine import engine_for
from regionmesh.names import SIGNAL_TASK, submit_queue
from regionmesh.workers.schedule_spec import CATCH_UPS, NAME_RE, OVERLAPS, Spec, parse_every
from regionmesh.workers.submission import TENANT_RE, WORKFLOW_RE, input_problem, run_id_for

SHOW_NEXT = 5


@dataclass(frozen=True)
class ScheduleDef:
    tenant_id: str
    name: str
    workflow: str
    input: Any
    cron: str | None = None
    every_s: float | None = None
    tz: str = "UTC"
    overlap: str = "skip"
    catch_up: str = "latest"
    jitter_s: float = 0.0
    paused: bool = False
    note: str | None = None

    def validate(self) -> None:
        """Raises InvalidSchedule naming what to fix."""
        if not TENANT_RE.fullmatch(self.tenant_id):
            raise InvalidSchedule(f"tenant {self.tenant_id!r}: letters, digits, '.', '_', '-' (1-128)")
        if not NAME_RE.fullmatch(self.name):
            raise InvalidSchedule(f"name {self.name!r}: letters, digits, '.', '_', '-' (1-64)")
        if not WORKFLOW_RE.fullmatch(self.workflow):
            raise InvalidSchedule(f"workflow {self.workflow!r} is not a workflow name")
        if self.overlap not in OVERLAPS:
            raise InvalidSchedule(f"--overlap {self.overlap!r}: one of {', '.join(OVERLAPS)}")
        if self.catch_up not in CATCH_UPS:
            raise InvalidSchedule(f"--catch-up {self.catch_up!r}: one of {', '.join(CATCH_UPS)}")
        if not isinstance(self.input, dict):
            raise InvalidSchedule("--input must be a JSON object")
        problem = input_problem(self.input)
        if problem:
            raise InvalidSchedule(f"--input: {problem}")
        self.spec().validate()

    def spec(self) -> Spec:
        return Spec(cron=self.cron, every_s=self.every_s, tz=self.tz, jitter_s=self.jitter_s)


def _region(config: MeshConfig, tenant_id: str, via: str | None) -> str:
    region = via or (config.local.name if config.local_region else next(iter(config.regions)))
    # Zones are read from the mesh (a zone set at run time is in no mesh file): a zoned tenant's
    # schedule input and signal payload are written only inside its zone.
    return zone_region(config, tenant_id, region) or region


def add_schedule(config: MeshConfig, tenant_id: str, name: str, *, workflow: str, input: Any = None,
                 cron: str | None = None, every: str | float | None = None, tz: str = "UTC", overlap: str = "skip",
                 catch_up: str = "latest", jitter_s: float = 0.0, via: str | None = None) -> ScheduleDef:
    """Create or replace a tenant's schedule. Raises InvalidSchedule. Returns what was written."""
    every_s = parse_every(every) if isinstance(every, str) else (float(every) if every is not None else None)
    definition = ScheduleDef(tenant_id, name, workflow, {} if input is None else input, cron=cron, every_s=every_s,
                             tz=tz, overlap=overlap.replace("-", "_"), catch_up=catch_up, jitter_s=jitter_s)
    definition.validate()
    schedules.upsert(engine_for(config, _region(config, tenant_id, via)), asdict(definition))
    return definition


def list_schedules(config: MeshConfig, tenant_id: str | None = None, via: str | None = None) -> list[dict[str, Any]]:
    region = _region(config, tenant_id, via) if tenant_id else (via or next(iter(config.regions)))
    return schedules.list_for(engine_for(config, region), tenant_id)


def show_schedule(config: MeshConfig, tenant_id: str, name: str, via: str | None = None,
                  count: int = SHOW_NEXT) -> dict[str, Any]:
    """A schedule with its tick state and its next ``count`` fire times (UTC). Raises ScheduleNotFound."""
    engine = engine_for(config, _region(config, tenant_id, via))
    row = schedules.get(engine, tenant_id, name)
    if row is None:
        raise ScheduleNotFound(tenant_id, name)
    spec = Spec(cron=row["cron"], every_s=row["every_s"], tz=row["tz"], jitter_s=row["jitter_s"])
    now = schedules.db_now(engine)
    after: datetime = max(row["last_tick"] or row["created_at"], now)
    row["next"] = spec.next_ticks(after, count)
    return row


def set_paused(config: MeshConfig, tenant_id: str, name: str, paused: bool, note: str | None = None,
               via: str | None = None) -> None:
    """Pause or resume. Raises ScheduleNotFound. Ticks that fall while paused are not fired on resume
    beyond what the catch-up policy takes (``latest``: the newest one)."""
    if not schedules.set_paused(engine_for(config, _region(config, tenant_id, via)), tenant_id, name, paused, note):
        raise ScheduleNotFound(tenant_id, name)


def delete_schedule(config: MeshConfig, tenant_id: str, name: str, via: str | None = None) -> None:
    """Delete (tombstone, replicated): its ticks stop in every region. Raises ScheduleNotFound."""
    if not schedules.delete(engine_for(config, _region(config, tenant_id, via)), tenant_id, name):
        raise ScheduleNotFound(tenant_id, name)


def trigger(config: MeshConfig, tenant_id: str, name: str, via: str | None = None) -> uuid.UUID:
    """Submit one run of the schedule now (its own key, not a tick's). Returns the run id."""
    row = show_schedule(config, tenant_id, name, via, count=0)
    key = f"rm-schedule:{name}:manual:{uuid.uuid4()}"
    receipt = submit(tenant_id, row["workflow"], row["input"], key, region=_region(config, tenant_id, via),
                     config=config, resolve_home=False)
    return receipt.run_id


def send_signal(config: MeshConfig, tenant_id: str, run_id: uuid.UUID | None, name: str, *, payload: Any = None,
                key: str | None = None, idempotency_key: str | None = None, via: str | None = None) -> tuple[uuid.UUID, str]:
    """Publish ``regionmesh.signal`` on a region's submit queue (a zoned tenant's: in its zone).
    The run is named by id or by the idempotency key it was submitted with. Returns (run id, key):
    the key given, else a fresh one (sending again with it is the same signal)."""
    if run_id is None and idempotency_key is None:
        raise InvalidSchedule("name the run: a run id or the idempotency key it was submitted with")
    rid = run_id or run_id_for(tenant_id, str(idempotency_key))
    key = key or str(uuid.uuid4())
    region = _region(config, tenant_id, via)
    queue = submit_queue(region)
    kwargs = {"v": 1, "tenant_id": tenant_id, "run_id": str(rid), "name": name, "payload": payload, "key": key}
    publisher(config.regions[region].broker_url, config.settings).send_task(
        SIGNAL_TASK, kwargs=kwargs, queue=queue, routing_key=queue, exchange="", declare=[],
        task_id=str(uuid.uuid5(rid, f"{name}\x1f{key}")))
    return rid, key
