"""``regionmesh runs prune``: retention of finished runs through the delete rule.

Two phases, so that no region ever removes a row another region may still write:

1. in one region, tombstone the finished runs older than the cutoff with their steps,
   tasks and attempts (in batches; each is an ordinary replicated update under the rule);
   a zone's runs are held only in its regions (data residency), so for each zone the
   region is not in, the same happens in a region of that zone; a zoned run's summary
   (``run_summaries``, everywhere) is tombstoned with it;
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
from regionmesh.routing.membership import with_mesh_zones

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


def tombstoning_regions(config: MeshConfig, region: str) -> list[str]:
    """Where prune tombstones: ``region`` (unzoned runs and its zone's), then the first region of
    every other zone (only a zone's regions hold its runs)."""
    out = [region]
    for members in with_mesh_zones(config, region).zones.values():
        if region not in members:
            out += [r for r in config.regions if r in members][:1]
    return out


def prune(config: MeshConfig, region: str, older_than_s: float, *, timeout: float = 300) -> PruneReport:
    """Delete runs finished more than ``older_than_s`` ago (and their rows) everywhere, from ``region``
    and, for zones ``region`` is not in, from a region of each zone.

    Raises PruneError if replication does not drain within ``timeout`` (the tombstones stay;
    a later prune removes them).
    """
    started = time.monotonic()
    ids: dict[str, list[uuid.UUID]] = {}
    tombstoned: Counter[str] = Counter()
    for where in tombstoning_regions(config, region):
        engine = engine_for(config, where)
        ids[where] = []
        while True:
            batch, counts = retention.tombstone_finished_runs(engine, older_than_s, BATCH)
            ids[where] += batch
            tombstoned.update(counts)
            if len(batch) < BATCH:
                break
    total = sum(len(v) for v in ids.values())
    engines = {n: engine_for(config, n) for n in config.regions}
    if not wait_drained(config, engines, timeout):
        raise PruneError(
            f"replication did not drain within {timeout:g}s: {total} runs are tombstoned but removed nowhere "
            "yet. Check 'regionmesh replication status', then run the prune again (it removes them)."
        )
    removed: Counter[str] = Counter()
    for where, run_ids in ids.items():
        for i in range(0, max(len(run_ids), 1), BATCH):
            removed.update(retention.purge_tombstones(engines[where], run_ids[i:i + BATCH], LEFTOVER_GRACE_S))
    return PruneReport(region, total, dict(tombstoned), dict(removed), time.monotonic() - started)
