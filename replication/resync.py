"""``regionmesh region resync REGION --from SEED``: rebuild a region's copy of the mesh.

For a region whose slots were lost (``wal_status = lost``: a peer removed WAL it had
not received) or whose data is gone. Its copy is thrown away and rebuilt exactly as a
joining region is (replication/join.py: slots first, a snapshot copy from the seed,
the other peers' slots advanced, subscriptions both ways), while the other regions
keep writing:

1. the region stops applying: its subscriptions are dropped, and their slots on the peers;
2. the peers stop subscribing to it: their subscriptions from it are dropped, and the
   slots on it. Changes it made that no peer received are lost to the mesh (fail it
   over first if it owned running work);
3. its replicated tables are emptied locally (TRUNCATE does not replicate);
4. it joins from the seed.

Its workers must be stopped meanwhile. ``verify`` reports identical afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from regionmesh.config import MeshConfig
from regionmesh.models import replicated_tables, slot_copy, subscribing
from regionmesh.models.engine import engine_for
from regionmesh.names import subscription_name
from regionmesh.replication.join import JoinError, add_region
from regionmesh.replication.setup import conninfo


@dataclass(frozen=True)
class ResyncReport:
    region: str
    seed: str
    dropped: list[str]
    rows_copied: int
    seconds: float


def resync(config: MeshConfig, region: str, *, seed: str, admin_url: str, timeout: float = 120) -> ResyncReport:
    """Rebuild ``region`` from ``seed``. ``admin_url``: a superuser URL of ``region``'s database
    (the copy sets session_replication_role). Raises JoinError."""
    started = time.monotonic()
    if region not in config.regions:
        raise JoinError(f"unknown region {region!r}; the mesh file has {', '.join(config.regions)}")
    if seed == region or seed not in config.regions:
        raise JoinError(f"seed {seed!r} must be another region of the mesh")
    peers = [p for p in config.regions if p != region]
    target = engine_for(config, region)
    dropped: list[str] = []
    for p in peers:
        inbound = subscription_name(region, p)
        if subscribing.drop_subscription(target, inbound):
            dropped.append(inbound)
        slot_copy.drop_slot_if_exists(conninfo(config, p), inbound)
        outbound = subscription_name(p, region)
        if subscribing.drop_subscription(engine_for(config, p), outbound):
            dropped.append(outbound)
        slot_copy.drop_slot_if_exists(conninfo(config, region), outbound)
    replicated_tables.wipe_replicated_tables(target)
    report = add_region(config, region, seed=seed, new_admin_url=admin_url, timeout=timeout)
    return ResyncReport(region, seed, dropped, report.rows_copied, time.monotonic() - started)
