"""Keeping this region's fence: up while it is failed over or catching up after being away.

Runs first among the reconciler's jobs (before the heartbeat): a region whose
own heartbeat is older than ``rejoin_after_s`` was away (its database or all
its workers were down) and claims nothing until every active peer's
heartbeat, as replicated to it, is younger than ``caught_up_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from regionmesh.log import event
from regionmesh.models import failover as repo
from regionmesh.models import replication as repl
from regionmesh.models.registry import region_statuses
from regionmesh.workers.runtime import Runtime


@dataclass
class FenceKeeper:
    rt: Runtime
    rejoin_after_s: float = 10.0
    caught_up_s: float = 5.0
    rejoining: bool = field(default=False)

    def __call__(self) -> None:
        engine = self.rt.engine
        region = self.rt.region
        statuses = region_statuses(engine)
        if statuses.get(region) == "failed_over":
            if repo.set_fence(engine, True, "failed over: run 'regionmesh restore' when caught up"):
                event(logging.WARNING, "fence.up", region=region, reason="failed_over")
            return
        age = repo.own_heartbeat_age(engine, region)
        if age is not None and age > self.rejoin_after_s and not self.rejoining:
            self.rejoining = True
            event(logging.WARNING, "fence.rejoining", region=region, away_s=round(age, 1))
        if self.rejoining:
            ages = repl.heartbeat_ages(engine)
            # Peers that never beat (no workers ever ran there) have written nothing to wait for.
            peers = [p for p in self.rt.config.regions
                     if p != region and statuses.get(p, "active") == "active" and p in ages]
            if all(ages[p] < self.caught_up_s for p in peers):
                self.rejoining = False
                event(logging.INFO, "fence.caught_up", region=region)
        reason = "rejoining: catching up with peers" if self.rejoining else None
        if repo.set_fence(engine, self.rejoining, reason):
            event(logging.WARNING if self.rejoining else logging.INFO,
                  "fence.up" if self.rejoining else "fence.down", region=region, reason=reason)
