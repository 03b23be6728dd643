"""Where a tenant's new runs go: the registry override if any, else the hash. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from regionmesh.routing.hashing import home_by_hash

OVERRIDE_REASONS = ("pin", "failover", "move")


@dataclass(frozen=True)
class RegistryEntry:
    tenant_id: str
    home_region: str
    reason: str  # pin | failover | move | hash (no override)
    epoch: int


@dataclass(frozen=True)
class Placement:
    tenant_id: str
    region: str
    reason: str  # hash | pin | failover | move
    epoch: int  # the registry epoch (0 when placed by hash with no registry row)

    def explain(self) -> str:
        if self.reason == "hash":
            return "rendezvous hash over the active regions"
        return f"tenant registry: {self.reason} at epoch {self.epoch}"


def place(tenant_id: str, active_regions: Iterable[str], entry: RegistryEntry | None,
          known_regions: Iterable[str] | None = None) -> Placement:
    """The placement of ``tenant_id``: a registry override to a known region wins; otherwise
    the rendezvous hash over ``active_regions``."""
    active = sorted(set(active_regions))
    known = set(known_regions) if known_regions is not None else set(active)
    if entry is not None and entry.reason in OVERRIDE_REASONS and entry.home_region in known:
        return Placement(tenant_id, entry.home_region, entry.reason, entry.epoch)
    return Placement(tenant_id, home_by_hash(tenant_id, active), "hash", entry.epoch if entry else 0)


def active_regions(configured: Iterable[str], statuses: Mapping[str, str]) -> list[str]:
    """Configured regions not marked otherwise than active in the replicated ``regions`` table."""
    return [r for r in configured if statuses.get(r, "active") == "active"]
