"""The router: placement from the local (replicated) registry and region rows, behind a short cache.

A cached placement may be stale; ``rm_place_run`` refuses to create a run from a stale one
(``moved``) and the caller asks again with ``fresh=True``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from regionmesh.models import registry as repo
from regionmesh.models import residency
from regionmesh.routing.placement import Placement, RegionRow, RegistryEntry, place
from regionmesh.routing.zones import ZoneBinding

Facts = tuple[ZoneBinding | None, tuple[int, bool]]  # zone binding, erasure (epoch, erased)

CACHE_TTL_S = 2.0


@dataclass
class Router:
    engine: Engine
    regions: list[str]
    ttl_s: float = CACHE_TTL_S
    _rows: tuple[float, dict[str, RegionRow], int] | None = None
    _entries: dict[str, tuple[float, RegistryEntry | None]] = field(default_factory=dict)
    _facts: dict[str, tuple[float, Facts]] = field(default_factory=dict)

    def _region_rows(self, fresh: bool) -> dict[str, RegionRow]:
        now = time.monotonic()
        if fresh or self._rows is None or now - self._rows[0] > self.ttl_s:
            rows = {name: RegionRow(*row) for name, row in repo.region_rows(self.engine).items()}
            version = hash((repo.registry_version(self.engine), residency.facts_version(self.engine)))
            if self._rows is not None and version != self._rows[2]:
                self._entries.clear()  # the registry changed: forget cached entries
                self._facts.clear()
            self._rows = (now, rows, version)
        return self._rows[1]

    def entry(self, tenant_id: str, *, fresh: bool = False) -> RegistryEntry | None:
        self._region_rows(fresh)
        now = time.monotonic()
        cached = self._entries.get(tenant_id)
        if fresh or cached is None or now - cached[0] > self.ttl_s:
            row = repo.registry_entry(self.engine, tenant_id)
            cached = (now, None if row is None else RegistryEntry(*row))
            self._entries[tenant_id] = cached
        return cached[1]

    def facts(self, tenant_id: str, *, fresh: bool = False) -> Facts:
        """The tenant's zone binding (with the zone's regions as this region's ``zones`` table holds
        them, read with the binding) and erasure fact."""
        now = time.monotonic()
        cached = self._facts.get(tenant_id)
        if fresh or cached is None or now - cached[0] > self.ttl_s:
            bound = residency.zone_binding(self.engine, tenant_id)
            binding = None if bound is None else ZoneBinding(bound[0], bound[2] or (), bound[1], bound[3])
            cached = (now, (binding, residency.erasure_fact(self.engine, tenant_id)))
            self._facts[tenant_id] = cached
        return cached[1]

    def place(self, tenant_id: str, *, fresh: bool = False) -> Placement:
        rows = self._region_rows(fresh)
        entry = self.entry(tenant_id, fresh=fresh)
        zone, erasure = self.facts(tenant_id, fresh=fresh)
        return place(tenant_id, self.regions, entry, rows, zone, erasure)

    def rows(self, *, fresh: bool = False) -> dict[str, RegionRow]:
        return dict(self._region_rows(fresh))
