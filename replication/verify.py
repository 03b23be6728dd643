"""``regionmesh verify``: do all regions hold identical rows?

Waits until every slot has confirmed its publisher's WAL position at the
start (or the timeout), then, per replicated table, compares per-bucket row
counts and XORed row hashes across regions (buckets by the key's hash), and
drills into differing buckets row by row. Buckets are hashed in parallel in
every region. Payload tables (data residency) are compared per zone: their
unzoned rows across every region, each zone's rows across that zone's regions;
a region holding a payload row of a zone it is not in fails verify by itself.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.models import link_health, verify_hashes
from regionmesh.models.engine import engine_for
from regionmesh.models.tables import REPLICATED_TABLES, ZONED_TABLES
from regionmesh.names import subscription_name
from regionmesh.replication import publications
from regionmesh.routing.membership import with_mesh_zones

BUCKETS = 1024
# Heartbeats change every second by design; they measure lag and are not compared.
COMPARED_TABLES = tuple(t for t in REPLICATED_TABLES if t != "heartbeats")


@dataclass
class VerifyResult:
    drained: bool
    waited_s: float
    compare_s: float
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> region -> count
    # table -> key -> region -> row hash (None: missing there)
    differences: dict[str, dict[str, dict[str, str | None]]] = field(default_factory=dict)

    # payload table -> region -> zone -> rows held there although the region is outside that zone
    outside_zone: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """Every region holds exactly the rows it should: the same rows as its peers for each
        scope, and no payload row of a zone it is not in."""
        return not any(self.differences.values()) and not self.outside_zone


def wait_drained(config: MeshConfig, engines: dict[str, Engine], timeout: float) -> bool:
    """Until every subscriber confirmed each publisher's WAL position as of now; False on timeout."""
    targets = {pub: link_health.current_lsn(engine) for pub, engine in engines.items()}
    deadline = time.monotonic() + timeout
    pending = {(sub, pub) for sub in engines for pub in engines if sub != pub}
    while pending:
        pending = {
            (sub, pub) for sub, pub in pending
            if not link_health.slot_caught_up(engines[pub], subscription_name(sub, pub), targets[pub])
        }
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def scopes(config: MeshConfig, table: str) -> list[tuple[list[str] | None, list[str]]]:
    """(zones of the rows compared, regions that must hold them) for one table: a payload table's
    unzoned rows in every region and each zone's rows in that zone's regions; any other table's
    rows in every region."""
    everywhere = list(config.regions)
    if table not in ZONED_TABLES:
        return [(None, everywhere)]
    out: list[tuple[list[str] | None, list[str]]] = [([""], everywhere)]
    return out + [([zone], [r for r in everywhere if r in members]) for zone, members in sorted(config.zones.items())]


def verify(config: MeshConfig, *, timeout: float = 30.0, tables: tuple[str, ...] = COMPARED_TABLES) -> VerifyResult:
    """Compare each table over exactly the rows each region should hold (payload tables per zone,
    replication/publications.py), and look for payload rows outside their zone."""
    config = with_mesh_zones(config)  # the zones the mesh holds, not this process's mesh file
    engines = {n: engine_for(config, n) for n in config.regions}
    try:
        started = time.monotonic()
        drained = wait_drained(config, engines, timeout)
        waited = time.monotonic() - started
        result = VerifyResult(drained=drained, waited_s=waited, compare_s=0.0)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            for table in tables:
                result.rows[table] = dict.fromkeys(engines, 0)
                result.differences[table] = {}
                for zones, holders in scopes(config, table):
                    _compare(pool, {r: engines[r] for r in holders}, table, zones, result)
                if table in ZONED_TABLES:
                    outside = dict(zip(engines, pool.map(
                        verify_hashes.rows_outside, engines.values(), [table] * len(engines),
                        [publications.zones_for(config, r) for r in engines]), strict=True))
                    breaches = {region: found for region, found in outside.items() if found}
                    if breaches:
                        result.outside_zone[table] = breaches
        result.compare_s = time.monotonic() - started
        return result
    finally:
        for engine in engines.values():
            engine.dispose()


def _compare(pool: ThreadPoolExecutor, engines: dict[str, Engine], table: str, zones: list[str] | None,
             result: VerifyResult) -> None:
    if len(engines) < 1:
        return
    hashes = dict(zip(engines, pool.map(partial(verify_hashes.bucket_hashes, table=table, buckets=BUCKETS, zones=zones),
                                        engines.values()), strict=True))
    for region, h in hashes.items():
        result.rows[table][region] += sum(c for c, _ in h.values())
    all_buckets = set().union(*(h.keys() for h in hashes.values()))
    differing = sorted(b for b in all_buckets if len({h.get(b) for h in hashes.values()}) > 1)
    if not differing:
        return
    rows = dict(zip(engines, pool.map(partial(verify_hashes.row_hashes, table=table, buckets=BUCKETS, wanted=differing,
                                              zones=zones), engines.values()), strict=True))
    keys = set().union(*(r.keys() for r in rows.values()))
    result.differences[table].update({
        key: {region: r.get(key) for region, r in rows.items()}
        for key in sorted(keys)
        if len({r.get(key) for r in rows.values()}) > 1
    })
