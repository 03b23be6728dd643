"""The router: placement from the local (replicated) registry, behind a short-lived cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from regionmesh.models import registry as repo
from regionmesh.routing.placement import Placement, RegistryEntry, active_regions, place

CACHE_TTL_S = 2.0


@dataclass
class Router:
    engine: Engine
    regions: list[str]
    ttl_s: float = CACHE_TTL_S
    _statuses: tuple[float, dict[str, str], int] | None = None
    _entries: dict[str, tuple[float, RegistryEntry | None]] = field(default_factory=dict)

    def _version(self) -> tuple[dict[str, str], int]:
        now = time.monotonic()
        if self._statuses is None or now - self._statuses[0] > self.ttl_s:
            statuses = repo.region_statuses(self.engine)
            version = repo.registry_version(self.engine)
            if self._statuses is not None and version != self._statuses[2]:
                self._entries.clear()  # the registry changed: forget cached entries
            self._statuses = (now, statuses, version)
        return self._statuses[1], self._statuses[2]

    def entry(self, tenant_id: str) -> RegistryEntry | None:
        self._version()
        now = time.monotonic()
        cached = self._entries.get(tenant_id)
        if cached is None or now - cached[0] > self.ttl_s:
            row = repo.registry_entry(self.engine, tenant_id)
            cached = (now, None if row is None else RegistryEntry(*row))
            self._entries[tenant_id] = cached
        return cached[1]

    def place(self, tenant_id: str) -> Placement:
        statuses, _ = self._version()
        return place(tenant_id, active_regions(self.regions, statuses), self.entry(tenant_id), self.regions)
