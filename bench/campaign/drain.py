"""After the faults: wait until every run of the campaign succeeded in every region and every
acknowledged submission has its run there (the client producers keep confirming meanwhile)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import Engine, text

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


def _recorded(engine: Engine, prefix: str) -> set[str]:
    """The submission ids this region has an outcome for: created a run, found to duplicate one,
    dead-lettered."""
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT submission_id FROM workflow_runs WHERE tenant_id LIKE :p AND submission_id IS NOT NULL "
            "UNION SELECT submission_id FROM duplicate_submissions WHERE tenant_id LIKE :p "
            "UNION SELECT submission_id FROM dead_letters WHERE submission_id IS NOT NULL"), {"p": prefix + "%"}).scalars())


def _unaccounted(plan: Plan, mesh: CampaignMesh, record: Record) -> set[str]:
    """Acknowledged submission ids (first publishes and re-sends) no region has an outcome for yet:
    a re-send published late in the campaign may still wait in a broker after its run is done."""
    with record.sent_lock:
        sids = {s.sid for s in record.sent} | {a.sid for a in record.resends}
    for r in mesh.regions:
        sids -= _recorded(mesh.engines[r], plan.prefix)
        if not sids:
            break
    return sids


def drain(plan: Plan, mesh: CampaignMesh, producers: Producers, record: Record, timeout: float) -> bool:
    """True once drained (every run succeeded everywhere it belongs, and every acknowledged
    submission id has an outcome somewhere), False if ``timeout`` seconds passed first."""
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
            if done and not _unaccounted(plan, mesh, record):
                return True
        except Exception as exc:  # a region still coming back
            record.log(f"  (drain: {type(exc).__name__})")
        time.sleep(1)
    return False
