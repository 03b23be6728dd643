"""Binding tenants to zones (data residency), written where the tenant is placed.

A binding is a placement fact: it is written at the tenant's current placer while its placement
there is what the caller computed (``rm_placement_version`` covers the binding's epoch), like a
pin. The tenant's placer must itself be in the zone: a tenant placed outside is first moved into
the zone (``tenants move``), so no region outside the zone ever creates a run of a zoned tenant.

Written at the placer, the binding reaches the other regions by replication. Until a region outside
the zone has applied it, that region may still accept a submission for the tenant and forward it,
keeping the message (input included) in its outbox; the zone scrub drops that input one reconciler
pass after the binding arrives there (docs/howto/zones-and-erasure.md). ``wait_applied`` tells the
operator when every region has it, and which have not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Applied:
    """Where a binding (a tenant, a zone, at least an epoch) has been applied, as each region's own
    copy of ``tenant_zones`` says."""

    applied: tuple[str, ...]
    pending: tuple[str, ...] = ()  # answered, without the binding (not replicated there yet)
    unreachable: dict[str, str] = field(default_factory=dict)  # region -> why it did not answer

    @property
    def everywhere(self) -> bool:
        return not self.pending and not self.unreachable


def wait_applied(config: MeshConfig, tenant: str, zone: str, epoch: int, *, timeout: float,
                 poll_s: float = 0.2) -> Applied:
    """Wait, at most ``timeout`` seconds, until every region of the mesh holds ``tenant``'s binding
    to ``zone`` at ``epoch`` or later. Returns where it is applied and where not (yet), and why a
    region did not answer at its last try."""
    deadline = time.monotonic() + timeout
    applied: set[str] = set()
    while True:
        pending: list[str] = []
        unreachable: dict[str, str] = {}
        for region in config.regions:
            if region in applied:
                continue
            try:
                binding = residency.zone_binding(engine_for(config, region), tenant)
            except Exception as exc:  # a region down or cut off: reported, asked again until the deadline
                unreachable[region] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            if binding is not None and binding[0] == zone and binding[1] >= epoch:
                applied.add(region)
            else:
                pending.append(region)
        if (not pending and not unreachable) or time.monotonic() >= deadline:
            return Applied(tuple(r for r in config.regions if r in applied), tuple(pending), unreachable)
        time.sleep(poll_s)
