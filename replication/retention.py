"""``regionmesh runs prune``: retention of finished runs through the delete rule.

Two phases, so that no region ever removes a row another region may still write:

1. in one region, tombstone the finished runs older than the cutoff with their steps,
   tasks and attempts (in batches; each is an ordinary replicated update under the rule);
2. wait until every region has applied every other region's WAL as of now: every
   tombstone of phase 1 is everywhere, and any newer write that beat one is too;
3. remove the tombstones physically (replicated deletes that remove only tombstones).

``verify`` stays identical throughout: each phase is a replicated write.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from regionmesh.config import MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import retention
from regionmesh.models.engine import engine_for
from regionmesh.replication.verify import wait_drained

BATCH = 1000
LEFTOVER_GRACE_S = 3600.0  # tombstones an interrupted prune left are removed after this long


class PruneError(RegionmeshError):
    pass


@dataclass
class PruneReport:
    region: str
    runs: int
    tombstoned: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def prune(config: MeshConfig, region: str, older_than_s: float, *, timeout: float = 300) -> PruneReport:
    """Delete runs finished more than ``older_than_s`` ago (and their rows) everywhere, from ``region``.

    Raises PruneError if replication does not drain within ``timeout`` (the tombstones stay;
    a later prune removes them).
    """
    started = time.monotonic()
    engine = engine_for(config, region)
    ids: list[uuid.UUID] = []
    tombstoned: Counter[str] = Counter()
    while True:
        batch, counts = retention.tombstone_finished_runs(engine, older_than_s, BATCH)
        ids += batch
        tombstoned.update(counts)
        if len(batch) < BATCH:
            break
    engines = {n: engine_for(config, n) for n in config.regions}
    if not wait_drained(config, engines, timeout):
        raise PruneError(
            f"replication did not drain within {timeout:g}s: {len(ids)} runs are tombstoned but removed nowhere "
            "yet. Check 'regionmesh replication status', then run the prune again (it removes them)."
        )
    removed: Counter[str] = Counter()
    for i in range(0, max(len(ids), 1), BATCH):
        removed.update(retention.purge_tombstones(engine, ids[i:i + BATCH], LEFTOVER_GRACE_S))
    return PruneReport(region, len(ids), dict(tombstoned), dict(removed), time.monotonic() - started)
