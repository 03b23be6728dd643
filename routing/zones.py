"""Zones (data residency): which regions may place a zoned tenant. Pure.

A zone is a set of regions, a replicated fact of the mesh (the ``zones`` table, written by
``regionmesh zones set`` or seeded from the mesh file's ``[zones] eu = ["eu-west", "eu-central"]``
by ``migrate``), so every running process places with the membership its region's copy holds.
A tenant bound to a zone (``tenant_zones``, a replicated registry fact with its own epoch) is
placed only in the zone's regions:

* its intent is a pin or move inside the zone, else the rendezvous hash over the zone's regions;
* following region successors (failover, drain) never leaves the zone: a successor outside the
  zone is replaced by the zone's next region by hash among those that still place runs;
* with no such region the placement is *held*: nothing creates its runs, its submissions wait
  (``held_reason`` says for what). So is a binding whose zone's row has not reached the region.

Operations that would take a zone's tenants out of the zone are refused (``refusal``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from regionmesh.routing.hashing import home_by_hash

FOLLOWED = ("failed_over", "draining")


@dataclass(frozen=True)
class ZoneBinding:
    """A tenant's zone as the registry holds it, and the zone's regions as the ``zones`` table
    holds them (``members_epoch`` None: the zone's row has not reached this region)."""

    zone: str
    regions: tuple[str, ...]
    epoch: int
    members_epoch: int | None = None


def held_reason(binding: ZoneBinding, known: Iterable[str], statuses: Mapping[str, str]) -> str:
    """What a held zoned tenant's submissions wait for, in words an operator can act on."""
    zone = binding.zone
    if binding.members_epoch is None:
        return (f"the definition of zone {zone} (its row in the zones table) to reach this region; "
                f"'regionmesh zones list' shows it, 'regionmesh zones set {zone} REGION...' defines it")
    members = [r for r in sorted(set(known)) if r in binding.regions]
    if not members:
        return (f"zone {zone} to name a region of the mesh (it names {', '.join(binding.regions) or 'none'}); "
                f"'regionmesh zones set {zone} REGION...'")
    states = ", ".join(f"{r} {statuses.get(r, 'active')}" for r in members)
    return f"a region of zone {zone} that places runs ({states}); 'regionmesh restore' one of them"


def zone_intent(tenant_id: str, binding: ZoneBinding, known: Iterable[str], pinned: str | None) -> str | None:
    """A zoned tenant's intent: ``pinned`` if it is a region of the zone, else the hash over the
    zone's configured regions; None when the zone names no configured region."""
    members = [r for r in sorted(set(known)) if r in binding.regions]
    if pinned is not None and pinned in members:
        return pinned
    return home_by_hash(tenant_id, members) if members else None


def zone_fallback(tenant_id: str, binding: ZoneBinding, known: Iterable[str], statuses: Mapping[str, str],
                  avoid: Iterable[str]) -> str | None:
    """The zone's next region by hash among its regions that place runs (active: neither failed
    over, draining nor failing over) and not in ``avoid``; None when there is none (hold)."""
    skip = set(avoid)
    members = [r for r in sorted(set(known)) if r in binding.regions and r not in skip
               and statuses.get(r, "active") == "active"]
    return home_by_hash(tenant_id, members) if members else None


def refusal(action: str, target: str, zones: Mapping[str, tuple[str, ...]], bound: Mapping[str, int],
            source: str | None = None, inactive: Collection[str] = ()) -> str | None:
    """Why ``action`` toward ``target`` would place zoned tenants outside their zone, or None.

    ``bound``: zone -> number of tenants bound to it. For a pin or move, ``source`` is unused and
    ``bound`` holds only the tenant's own zone. For drain/failover of ``source``, the zone of
    ``source`` matters when it has bound tenants and ``target`` is outside it; the refusal names
    the zone's other regions not in ``inactive`` (failed over, draining) as the way out.
    """
    if action in ("pin", "move"):
        for zone, count in bound.items():
            if count and target not in zones.get(zone, ()):
                return (f"the tenant is bound to zone {zone} ({', '.join(zones.get(zone, ()))}): "
                        f"{action} it to a region of that zone, not {target}")
        return None
    for zone, members in zones.items():
        if source in members and target not in members and bound.get(zone, 0):
            inside = [r for r in members if r != source and r not in inactive]
            others = [r for r in members if r != source]
            hint = (f"{action} to {' or '.join(inside)} instead" if inside
                    else f"no other region of zone {zone} is active ({', '.join(others)} not either): its tenants "
                         f"wait until one returns ('regionmesh restore' it)" if others
                    else "no other region of the zone exists: its tenants wait until it returns")
            return (f"{source} is in zone {zone}, which has {bound[zone]} bound tenant(s); "
                    f"{target} is outside the zone: {hint}")
    return None
