"""Zones on a running mesh: define, change and remove a zone (``regionmesh zones``).

A zone's membership is a replicated row (``zones``), written in one region and applied by every
other; placement reads it there (``routing.membership``), so running workers see a new zone
without a restart. A zone that tenants are bound to keeps its regions: a change would move tenants
between regions with no placer handing over (add a zone and bind new tenants to it instead; the
limit is in docs/howto/zones-and-erasure.md). The payload publications' row filters are DDL, which
does not replicate: a change updates them in every region it reaches, before it returns, so that
the zone's payload rows, all written after the first binding, reach the zone's other regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regionmesh.config import REGION_NAME_RE, MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import residency
from regionmesh.models.engine import engine_for
from regionmesh.replication import publications
from regionmesh.routing.membership import with_mesh_zones


class ZoneRefused(RegionmeshError):
    """A zone change that would break residency or placement; the message says what to do."""


@dataclass(frozen=True)
class ZoneChange:
    zone: str
    regions: list[str]
    outcome: str  # set | unchanged | removed
    epoch: int
    written_at: str
    published_in: list[str] = field(default_factory=list)  # regions whose payload filters now match
    unreachable: list[str] = field(default_factory=list)  # regions to run 'regionmesh replication setup' for


def _check(config: MeshConfig, zone: str, regions: list[str]) -> None:
    if not REGION_NAME_RE.match(zone):
        raise ZoneRefused(f"invalid zone name {zone!r}: a lowercase letter, then lowercase letters, digits or '-'")
    unknown = [r for r in regions if r not in config.regions]
    if unknown or len(set(regions)) != len(regions):
        raise ZoneRefused(f"zone {zone}: name distinct regions of the mesh ({', '.join(config.regions)}); "
                              f"not {', '.join(unknown) or 'a region twice'}")


def _bound_anywhere(config: MeshConfig, zone: str) -> dict[str, int]:
    """Region -> tenants bound to ``zone`` in its copy (-1: it did not answer). A binding written
    in one region may not have reached the others yet, so every copy is asked."""
    out: dict[str, int] = {}
    for region in config.regions:
        try:
            out[region] = residency.bound_counts(engine_for(config, region)).get(zone, 0)
        except Exception:  # an unreachable region: it may hold a binding nobody else has yet
            out[region] = -1
    return out


def set_zone(config: MeshConfig, zone: str, regions: list[str], via: str) -> ZoneChange:
    """Define ``zone`` as ``regions`` (an empty list removes it), written at ``via``; then update the
    payload publications in every region that answers.

    Raises ZoneRefused when a name is invalid, a region is in another zone, tenants are bound to
    the zone (in any region's copy) or a region that did not answer might hold such a binding.
    """
    _check(config, zone, regions)
    existing = with_mesh_zones(config, via).zones.get(zone)
    if existing is None and not regions:
        raise ZoneRefused(f"{via} holds no zone {zone}: 'regionmesh zones list'")
    if existing is not None and sorted(existing) != sorted(regions):
        bound = _bound_anywhere(config, zone)
        if any(n != 0 for n in bound.values()):
            holders = ", ".join(f"{r} ({'unreachable' if n < 0 else f'{n} bound'})" for r, n in bound.items() if n)
            raise ZoneRefused(
                f"zone {zone} keeps its regions ({', '.join(existing)}) while tenants may be bound to it: {holders}. "
                "Changing them would move its tenants without a hand-over; define a new zone and bind new tenants "
                "to it (a region is in one zone at a time: remove it from this one only once no tenant is bound)")
    outcome, value = residency.set_zone_regions(engine_for(config, via), zone, regions)
    if outcome == "bound":
        raise ZoneRefused(f"zone {zone} has {value} bound tenant(s) at {via}; its regions stay as they are")
    if outcome == "taken":
        raise ZoneRefused(f"a region of {', '.join(regions)} is in another zone already "
                              "(a region is in at most one zone): 'regionmesh zones list'")
    published, unreachable = _republish(config, via)
    kind = "removed" if not regions and outcome == "set" else outcome
    return ZoneChange(zone, regions, kind, value, via, published, unreachable)


def _republish(config: MeshConfig, via: str) -> tuple[list[str], list[str]]:
    """Every answering region's payload publications filtered by the zones ``via`` holds now."""
    zoned = with_mesh_zones(config, via)
    engines, unreachable = {}, []
    for region in config.regions:
        engine = engine_for(config, region)
        try:
            with engine.connect():
                engines[region] = engine
        except Exception:  # down: its filters are set by 'regionmesh replication setup' once it is back
            unreachable.append(region)
    if engines:
        publications.publish_all(zoned, engines, list(engines), set())
    return list(engines), unreachable


def list_zones(config: MeshConfig, via: str) -> list[dict[str, Any]]:
    """Every zone as ``via``'s copy holds it (removed ones with no regions), with bound tenants."""
    return residency.zone_rows(engine_for(config, via))
