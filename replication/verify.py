"""``regionmesh verify``: do all regions hold identical rows?

Waits until every slot has confirmed its publisher's WAL position at the
start (or the timeout), then, per replicated table, compares per-bucket row
counts and XORed row hashes across regions (buckets by the key's hash), and
drills into differing buckets row by row. Buckets are hashed in parallel in
every region.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.models import replication as repl
from regionmesh.models.engine import engine_for
from regionmesh.models.tables import REPLICATED_TABLES
from regionmesh.names import subscription_name

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

    @property
    def identical(self) -> bool:
        return not any(self.differences.values())


def wait_drained(config: MeshConfig, engines: dict[str, Engine], timeout: float) -> bool:
    """Until every subscriber confirmed each publisher's WAL position as of now; False on timeout."""
    targets = {pub: repl.current_lsn(engine) for pub, engine in engines.items()}
    deadline = time.monotonic() + timeout
    pending = {(sub, pub) for sub in engines for pub in engines if sub != pub}
    while pending:
        pending = {
            (sub, pub) for sub, pub in pending
            if not repl.slot_caught_up(engines[pub], subscription_name(sub, pub), targets[pub])
        }
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def verify(config: MeshConfig, *, timeout: float = 30.0, tables: tuple[str, ...] = COMPARED_TABLES) -> VerifyResult:
    engines = {n: engine_for(config, n) for n in config.regions}
    try:
        started = time.monotonic()
        drained = wait_drained(config, engines, timeout)
        waited = time.monotonic() - started
        result = VerifyResult(drained=drained, waited_s=waited, compare_s=0.0)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            for table in tables:
                hashes = dict(zip(engines, pool.map(partial(repl.bucket_hashes, table=table, buckets=BUCKETS),
                                                    engines.values()), strict=True))
                result.rows[table] = {r: sum(c for c, _ in h.values()) for r, h in hashes.items()}
                all_buckets = set().union(*(h.keys() for h in hashes.values()))
                differing = sorted(b for b in all_buckets if len({h.get(b) for h in hashes.values()}) > 1)
                if not differing:
                    result.differences[table] = {}
                    continue
                rows = dict(zip(engines, pool.map(partial(repl.row_hashes, table=table, buckets=BUCKETS, wanted=differing),
                                                  engines.values()), strict=True))
                keys = set().union(*(r.keys() for r in rows.values()))
                result.differences[table] = {
                    key: {region: r.get(key) for region, r in rows.items()}
                    for key in sorted(keys)
                    if len({r.get(key) for r in rows.values()}) > 1
                }
        result.compare_s = time.monotonic() - started
        return result
    finally:
        for engine in engines.values():
            engine.dispose()
