"""When which fault lands: one at a time, each once the mesh is healthy again (every region holds its
lease), from the campaign's own seeded generator."""

from __future__ import annotations

import random
import threading
import time

from bench.campaign.faults import KINDS, Faults
from bench.campaign.mesh import CampaignMesh
from bench.campaign.record import Plan, Record


def schedule(plan: Plan, mesh: CampaignMesh, faults: Faults, record: Record, stop: threading.Event) -> None:
    """Seeded faults until the campaign's end: first every kind once in a seeded order (even if
    that takes longer than the campaign), then at random."""
    rng = random.Random(plan.seed * 7919 + 1)
    kinds = list(plan.kinds or KINDS)
    order = kinds[:]
    rng.shuffle(order)
    if plan.mutant and plan.mutant.needs in order:  # the fault without which the mutant cannot show
        order.remove(plan.mutant.needs)
        order.insert(0, plan.mutant.needs)
    end = record.started + plan.minutes * 60
    while (time.time() < end or order) and not stop.is_set():
        mesh.wait_healthy(90)
        kind = order.pop(0) if order else rng.choice(kinds)
        left = end - time.time()
        # Cuts last 10-60 s; while kinds are still owed in a short campaign, they leave them ~15 s each.
        seconds = max(10.0, min(rng.uniform(10, 60), left - 15 * len(order)))
        try:
            faults.inject(kind, rng, seconds)
        except Exception as exc:  # a fault that could not be injected is reported, not hidden
            record.note(f"{kind} failed to inject: {type(exc).__name__}: {exc}")
            record.log(f"  {kind} failed to inject: {type(exc).__name__}: {exc}")
        stop.wait(rng.uniform(2, 6))
