"""Where a tenant's new runs go. Pure.

A tenant's *intent* is what an operator asked for: a registry row (pin or move) or, without
one, the rendezvous hash over every configured region. Its *placement* follows the intent
through region successors: a region that was failed over (or is draining) hands its tenants to
the region named in its ``regions`` row, and so on. Failover, drain and restore change region
rows only, never a tenant's intent, so pins and moves survive any number of them.

Every fact placement depends on is written in the database of the region that places the
affected tenants at that moment (a move at the old home, a restore at the successor, a failover
at the heir once the failed region's lease has expired), and ``rm_place_run`` creates a run only
while the placement inputs are still those the worker computed from (``Placement.version``):
so no two regions place the same tenant at once.

A tenant bound to a zone is placed only inside it (``routing.zones``): its placement may be
*held* (no region of the zone places runs now), and then nothing creates its runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from regionmesh.routing.hashing import home_by_hash
from regionmesh.routing.zones import ZoneBinding, held_reason, zone_fallback, zone_intent

OVERRIDE_REASONS = ("pin", "move", "failover")  # 'failover' rows come from releases before 0009
FOLLOWED_STATUSES = ("failed_over", "draining")


@dataclass(frozen=True)
class RegistryEntry:
    tenant_id: str
    home_region: str
    reason: str  # pin | move | hash (no override) | failover (legacy)
    epoch: int


@dataclass(frozen=True)
class RegionRow:
    status: str  # active | draining | failing_over | failed_over
    successor: str | None  # where its tenants go while failed over or draining
    epoch: int


@dataclass(frozen=True)
class Placement:
    tenant_id: str
    region: str  # where new runs are created now
    reason: str  # hash | pin | move: what decided the intent
    epoch: int  # new runs carry it: it grows with every move of the intent and every failover on the path
    intent: str  # the region the intent names
    version: str = ""  # the inputs, as rm_placement_version spells them
    zone: str | None = None  # the zone the tenant is bound to
    held: bool = False  # zoned and no region of its zone places runs now: nothing creates its runs
    erased: bool = False  # the tenant was erased and not re-enabled: its submissions are refused
    zone_regions: tuple[str, ...] = ()  # the regions of its zone, as the zones table holds them
    waits_for: str | None = None  # held: what its submissions wait for

    def explain(self) -> str:
        how = ("rendezvous hash over the configured regions" if self.reason == "hash"
               else f"tenant registry: {self.reason}")
        if self.region != self.intent:
            how += f", {self.intent} is failed over or draining: its successor places it"
        if self.zone:
            how += f"; bound to zone {self.zone}" + (", no region of it places runs: held" if self.held else "")
        return how


def version(entry: RegistryEntry | None, rows: Mapping[str, RegionRow], zone_epoch: int = 0,
            erasure_epoch: int = 0, members_epoch: int | None = None) -> str:
    """The placement inputs in the form ``rm_placement_version()`` returns (models/sql/lease.sql):
    registry epoch / region rows / zone binding epoch[:its zone row's epoch, once that row was
    changed (> 1)] / erasure epoch (0 where there is no row)."""
    regions = ",".join(f"{name}={rows[name].status}@{rows[name].epoch}" for name in sorted(rows))
    zone = f"{zone_epoch}:{members_epoch}" if members_epoch is not None and members_epoch > 1 else f"{zone_epoch}"
    return f"{entry.epoch if entry else 0}/{regions}/{zone}/{erasure_epoch}"


def place(tenant_id: str, configured: Iterable[str], entry: RegistryEntry | None,
          rows: Mapping[str, RegionRow] | None = None, zone: ZoneBinding | None = None,
          erasure: tuple[int, bool] = (0, False)) -> Placement:
    """The placement of ``tenant_id`` among the ``configured`` regions given its registry entry,
    the region rows, its zone binding and its erasure fact (epoch, erased).
    Raises ValueError when no region is configured."""
    known = sorted(set(configured))
    rows = rows or {}
    pinned = entry.home_region if entry is not None and entry.reason in OVERRIDE_REASONS else None
    held = False
    if zone is not None:
        found = zone_intent(tenant_id, zone, known, pinned)
        held = found is None
        intent = found or home_by_hash(tenant_id, known)
        reason = entry.reason if found is not None and found == pinned and entry is not None else "hash"
    elif pinned is not None and pinned in known:
        intent, reason = pinned, entry.reason if entry else "hash"
    else:
        intent, reason = home_by_hash(tenant_id, known), "hash"
    region, seen, epoch = intent, {intent}, (entry.epoch if entry else 0)
    while not held:
        row = rows.get(region)
        if row is None or row.status not in FOLLOWED_STATUSES or not row.successor:
            break
        successor = row.successor
        if zone is not None and successor not in zone.regions:
            statuses = {name: r.status for name, r in rows.items()}
            successor = zone_fallback(tenant_id, zone, known, statuses, seen) or ""
            if not successor:
                held = True  # no region of the zone places runs: hold rather than leave the zone
                break
        if successor not in known or successor in seen:
            break  # an unknown or circular successor: stay (a refused write should make this impossible)
        epoch += row.epoch
        region = successor
        seen.add(region)
    waits = held_reason(zone, known, {n: r.status for n, r in rows.items()}) if zone is not None and held else None
    return Placement(tenant_id, region, reason, max(1, epoch), intent,
                     version(entry, rows, zone.epoch if zone else 0, erasure[0], zone.members_epoch if zone else None),
                     zone.zone if zone else None, held, erasure[1], zone.regions if zone else (), waits)


def placing_regions(configured: Iterable[str], rows: Mapping[str, RegionRow]) -> list[str]:
    """Regions that may place runs: configured and neither failed over nor draining."""
    return [r for r in configured if rows.get(r) is None or rows[r].status not in FOLLOWED_STATUSES]
