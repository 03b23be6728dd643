"""Binding tenants to zones (data residency), written where the tenant is placed.

A binding is a placement fact: it is written at the tenant's current placer while its placement
there is what the caller computed (``rm_placement_version`` covers the binding's epoch), like a
pin. The tenant's placer must itself be in the zone: a tenant placed outside is first moved into
the zone (``tenants move``), so no region outside the zone ever creates a run of a zoned tenant.
"""

from __future__ import annotations

import time

from regionmesh.config import MeshConfig
from regionmesh.models import residency
from regionmesh.models.engine import engine_for
from regionmesh.ops.failover import FailoverRefused, placer_of
from regionmesh.routing.membership import with_mesh_zones


def bind_zone(config: MeshConfig, tenant: str, zone: str, via: str, *, timeout: float = 30.0) -> tuple[str, int]:
    """Bind ``tenant`` to ``zone``. Returns (where it was written, the binding's epoch).

    Raises FailoverRefused when the zone is not in the mesh file, the tenant is placed outside the
    zone now, it already has runs (replicated everywhere before the binding), or its placement
    kept changing for ``timeout`` seconds.
    """
    zones = with_mesh_zones(config, via).zones  # the zones the mesh holds (regionmesh zones set)
    members = zones.get(zone)
    if not members:
        known = ", ".join(zones) or "none (define one: 'regionmesh zones set NAME REGION...')"
        raise FailoverRefused(f"unknown zone {zone!r}; zones of the mesh: {known}")
    deadline = time.monotonic() + timeout
    while True:
        placement = placer_of(config, tenant, via)
        if placement.region not in members:
            inside = sorted(members)
            raise FailoverRefused(
                f"{tenant} is placed at {placement.region}, outside zone {zone} ({', '.join(inside)}): "
                f"first 'regionmesh tenants move {tenant} --to {inside[0]}', then bind it")
        outcome, value = residency.set_zone(engine_for(config, placement.region), tenant, zone,
                                            expect_version=placement.version)
        if outcome == "bound":
            return placement.region, value
        if outcome == "unknown_zone":
            raise FailoverRefused(
                f"zone {zone} has not reached {placement.region}, which places {tenant}, yet; "
                "wait for replication ('regionmesh zones list --region " + placement.region + "') and try again")
        if outcome == "has_runs":
            raise FailoverRefused(
                f"{tenant} already has {value} run(s), replicated to every region before any binding; "
                f"bind a tenant before its first run (or erase it: 'regionmesh tenants erase {tenant}')")
        if time.monotonic() > deadline:
            raise FailoverRefused(f"{tenant}'s placement kept changing for {timeout:g}s; try again")
