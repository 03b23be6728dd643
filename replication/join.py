"""Adding a region to a running mesh without duplicates, loops or lost changes.

PostgreSQL has no procedure for an N-way mesh; this is the known-good one
(pgEdge Spock's "Zodan"):

1. on every existing peer except the seed, create the new region's slot now,
   so its changes are kept from this moment;
2. wait until the seed has applied each of those peers past that moment, then
   pause the seed's subscriptions from them and note how far it got;
3. create the seed's slot for the new region exporting a snapshot, and copy
   every replicated table as of that snapshot into the new region (payload rows
   only of the zone the new region may hold: a zoned new region copies from a
   seed of its zone);
4. advance the other peers' new slots to the positions noted in 2 (the copy
   holds everything before them), then let the new region subscribe to all
   peers on those slots (copy_data = false), and resume the seed;
5. let every peer subscribe to the new region (copy_data = false).

The others keep writing throughout; ``verify`` reports 0 differences after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from regionmesh.config import MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import lease as lease_repo
from regionmesh.models import link_health, replicated_tables, slot_copy, subscribing
from regionmesh.models.engine import engine_for
from regionmesh.names import subscription_name
from regionmesh.replication import publications
from regionmesh.replication.setup import conninfo


class JoinError(RegionmeshError):
    pass


@dataclass(frozen=True)
class JoinReport:
    region: str
    seed: str
    rows_copied: int
    seconds: float


def add_region(config: MeshConfig, new: str, *, seed: str, new_admin_url: str, timeout: float = 120) -> JoinReport:
    """Join ``new`` (migrated, empty) to the mesh, copying from ``seed``.

    ``new_admin_url`` must be allowed to set session_replication_role (a superuser).
    Raises JoinError.
    """
    started = time.monotonic()
    peers = [r for r in config.regions if r != new]
    if seed not in peers:
        raise JoinError(f"seed {seed!r} is not an existing region of the mesh ({', '.join(peers)})")
    engines = {r: engine_for(config, r) for r in config.regions}
    try:
        if link_health.subscriptions(engines[new]):
            raise JoinError(f"{new} already subscribes to the mesh")
        if replicated_tables.has_rows(engines[new]):
            raise JoinError(f"{new} already holds replicated rows; a joining region must be empty")
        zone = config.zone_of(new)
        inside = [p for p in peers if zone and config.zone_of(p) == zone]
        if inside and seed not in inside:
            raise JoinError(f"{new} is in zone {zone}, whose payloads only its regions hold: "
                            f"copy from {' or '.join(inside)} (--seed)")
        # Publications before any slot: pgoutput reads them as of each change it decodes, so a
        # slot older than its publication fails (replication/publications.py).
        publications.publish(config, engines[new], new)
        for p in peers:
            publications.ensure_payload_publication(config, engines[p], new)
        others = [p for p in peers if p != seed]
        # 1. Slots for the new region on the non-seed peers, from now on.
        created: dict[str, str] = {}
        for p in others:
            slot = subscription_name(new, p)
            slot_copy.drop_slot_if_exists(conninfo(config, p), slot)
            created[p] = slot_copy.create_slot(conninfo(config, p), slot)
            # A write after the slot exists, so the seed's progress from p passes that point.
            lease_repo.beat(engines[p], p)
        # 2. The seed applies each peer past that point, then pauses.
        seed_subs = {p: subscription_name(seed, p) for p in others}
        deadline = time.monotonic() + timeout
        for p, sub in seed_subs.items():
            while not link_health.lsn_at_least(engines[seed], link_health.origin_progress(engines[seed], sub), created[p]):
                if time.monotonic() > deadline:
                    raise JoinError(f"{seed} did not catch up with {p} within {timeout}s; is the link streaming?")
                time.sleep(0.05)
        positions: dict[str, str] = {}
        try:
            for p, sub in seed_subs.items():
                subscribing.set_subscription_enabled(engines[seed], sub, False)
                subscribing.wait_worker_stopped(engines[seed], sub)
                pos = link_health.origin_progress(engines[seed], sub)
                positions[p] = pos or created[p]
            # 3. Copy from the seed as of the new slot's snapshot.
            seed_slot = subscription_name(new, seed)
            slot_copy.drop_slot_if_exists(conninfo(config, seed), seed_slot)
            zones = publications.zones_for(config, new) if replicated_tables.payload_zoned(engines[seed]) else None
            rows = slot_copy.copy_with_new_slot(conninfo(config, seed), config.regions[seed].database_url, seed_slot,
                                                new_admin_url, zones)
            # 4. Skip what the copy holds, and subscribe the new region to everyone.
            for p in others:
                slot_copy.advance_slot(conninfo(config, p), subscription_name(new, p), positions[p])
            for p in peers:
                subscribing.create_subscription_on_slot(engines[new], subscription_name(new, p), conninfo(config, p),
                                                        publications.publications_for(config, engines[p], new))
        finally:
            for sub in seed_subs.values():
                subscribing.set_subscription_enabled(engines[seed], sub, True)
        # 5. Everyone subscribes to the new region (it has originated nothing yet).
        for p in peers:
            subscribing.ensure_subscription(engines[p], subscription_name(p, new), conninfo(config, new),
                                            publications.publications_for(config, engines[new], p))
        return JoinReport(new, seed, rows, time.monotonic() - started)
    finally:
        for engine in engines.values():
            engine.dispose()
