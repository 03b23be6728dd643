"""After the faults: wait until every run of the campaign succeeded in every region and every
acknowledged submission has its run there (the client producers keep confirming meanwhile)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import Engine

from bench.campaign.mesh import CampaignMesh
from bench.campaign.producers import Producers
from bench.campaign.record import ZONE, Plan, Record
from regionmesh.models import runs
from regionmesh.workers.submission import run_id_for


def _campaign_runs(engine: Engine, tenants: list[str]) -> dict[uuid.UUID, str]:
    """run id -> status of every run of the campaign's tenants this region holds."""
    out: dict[uuid.UUID, str] = {}
    for tenant in tenants:
        out.update({r["id"]: r["status"] for r in runs.list_runs(engine, tenant, limit=1_000_000)})
    return out


def drain(plan: Plan, mesh: CampaignMesh, producers: Producers, record: Record, timeout: float) -> bool:
    """True once drained, False if ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    zoned = set(plan.zoned_tenants)
    members = plan.zones.get(ZONE, [])
    wanted = {r: {run_id_for(s.ack.tenant, s.ack.key) for s in record.sent
                  if s.ack.tenant not in zoned or r in members} for r in mesh.regions}
    next_confirm = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() > next_confirm:
            producers.confirm_journals()
            next_confirm = time.monotonic() + 10
        try:
            done = True
            for r in mesh.regions:
                # A zoned tenant's runs are held in its zone only (elsewhere: their summaries).
                have = _campaign_runs(mesh.engines[r], plan.tenants if r in members else
                                      [t for t in plan.tenants if t not in zoned])
                if not wanted[r] <= have.keys() or any(s != "succeeded" for s in have.values()):
                    done = False
                    break
            if done:
                return True
        except Exception as exc:  # a region still coming back
            record.log(f"  (drain: {type(exc).__name__})")
        time.sleep(1)
    return False
