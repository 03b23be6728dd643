"""Replication lag of a zoned tenant's run rows vs an unzoned tenant's, under the same load.

    python -m bench.zoned_lag [--rate 500] [--seconds 20]

Four regions on loopback, zone eu = eu-west + eu-central (us-east and ap-south outside). One
writer in eu-west commits single-row run inserts at --rate, alternating a tenant bound to zone
eu and an unbound one. A zoned run's row travels only to eu-central (rm_pub_to_eu-central, row
filter on zone); its summary (run_summaries, written by the same commit) to every peer; an
unzoned run's row to every peer. Lag is the run's created_at at the origin (taken at insert,
just before commit) to the time a replica trigger in the peer stamps when it applied the row
(same host clock), as bench.replication_lag measures it. Prints a table and writes
bench/results/zoned_lag.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import Engine, text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.models.engine import make_engine
from regionmesh.supervisor import wait_for

REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]
EU = ["eu-west", "eu-central"]
ORIGIN = "eu-west"
ZONED, OPEN = "bench-zoned", "bench-open"

# In every peer: a local table of apply times, filled by replica-only triggers.
SEEN = """
CREATE TABLE IF NOT EXISTS bench_seen (tbl text NOT NULL, id uuid NOT NULL, seen_at timestamptz NOT NULL,
                                       PRIMARY KEY (tbl, id));
CREATE OR REPLACE FUNCTION bench_seen_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_seen VALUES (TG_TABLE_NAME, NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING; RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION bench_seen_summary() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_seen VALUES (TG_TABLE_NAME, NEW.run_id, clock_timestamp()) ON CONFLICT DO NOTHING; RETURN NULL; END $$;
DROP TRIGGER IF EXISTS bench_seen ON workflow_runs;
CREATE TRIGGER bench_seen AFTER INSERT ON workflow_runs FOR EACH ROW EXECUTE FUNCTION bench_seen_run();
ALTER TABLE workflow_runs ENABLE REPLICA TRIGGER bench_seen;
DROP TRIGGER IF EXISTS bench_seen ON run_summaries;
CREATE TRIGGER bench_seen AFTER INSERT ON run_summaries FOR EACH ROW EXECUTE FUNCTION bench_seen_summary();
ALTER TABLE run_summaries ENABLE REPLICA TRIGGER bench_seen;
"""


def write_load(engine: Engine, prefix: str, rate: float, seconds: float) -> int:
    """Single-row run inserts at ``rate`` per second, zoned and unzoned tenants in turn. Returns rows."""
    n = 0
    start = time.perf_counter()
    with engine.connect() as conn:
        while time.perf_counter() - start < seconds:
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            conn.execute(text(
                """INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, owner_region)
                   VALUES (:id, :t, :k, 'bench', '{"payload": "x"}', 'running', :o)"""),
                {"id": uuid.uuid4(), "t": ZONED if n % 2 == 0 else OPEN, "k": f"{prefix}-{n}", "o": ORIGIN})
            conn.commit()
            n += 1
    return n


def lags_ms(dst: Engine, since: Any, tenant: str, table: str) -> list[float]:
    """Apply lags in ``dst`` of ``tenant``'s runs created at the origin since ``since`` (their ``table`` rows)."""
    key = "id" if table == "workflow_runs" else "run_id"
    with dst.connect() as conn:
        rows = conn.execute(text(
            f"""SELECT extract(epoch FROM s.seen_at - r.created_at) FROM {table} r
                  JOIN bench_seen s ON s.tbl = :tbl AND s.id = r.{key}
                 WHERE r.tenant_id = :t AND r.created_at >= :since"""
        ), {"tbl": table, "t": tenant, "since": since}).scalars().all()
    return sorted(float(v) * 1000 for v in rows)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"rows": len(values), "p50_ms": statistics.median(values), "p99_ms": pct(values, 0.99),
            "max_ms": values[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "zoned_lag.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    out: dict[str, Any] = {"args": vars(args), "origin": ORIGIN, "zones": {"eu": EU}}
    try:
        config = dev.up(REGIONS, workers=0, zones={"eu": EU})
        engines = {r: make_engine(config.regions[r].database_url, region=r) for r in REGIONS}
        for region in REGIONS[1:]:
            with engines[region].begin() as conn:
                conn.execute(text(SEEN))
        with engines[ORIGIN].begin() as conn:
            conn.execute(text("INSERT INTO tenant_zones (tenant_id, zone) VALUES (:t, 'eu')"), {"t": ZONED})
        def bound(region: str) -> bool:
            with engines[region].connect() as conn:
                return bool(conn.execute(text("SELECT count(*) FROM tenant_zones WHERE tenant_id = :t"),
                                         {"t": ZONED}).scalar())

        wait_for(lambda: all(bound(r) for r in REGIONS), 30, "the binding everywhere")
        write_load(engines[ORIGIN], "warm", args.rate, 1)
        with engines[ORIGIN].connect() as conn:
            since = conn.execute(text("SELECT clock_timestamp()")).scalar()
        written = write_load(engines[ORIGIN], "steady", args.rate, args.seconds)
        out["rows"] = written
        out["achieved_rate"] = written / args.seconds
        zoned_n, open_n = (written + 1) // 2, written // 2
        results: dict[str, Any] = {}
        cases = [("zoned run rows", ZONED, "workflow_runs", ["eu-central"], zoned_n),
                 ("zoned run summaries", ZONED, "run_summaries", REGIONS[1:], zoned_n),
                 ("unzoned run rows", OPEN, "workflow_runs", REGIONS[1:], open_n)]
        for label, tenant, table, peers, expected in cases:
            results[label] = {}
            for peer in peers:
                wait_for(lambda p=peer, t=tenant, tb=table, e=expected: len(lags_ms(engines[p], since, t, tb)) >= e,
                         120, f"{peer} to apply every {label}")
                results[label][peer] = summary(lags_ms(engines[peer], since, tenant, table))
            for peer in REGIONS[1:]:
                if peer not in peers and table == "workflow_runs":
                    with engines[peer].connect() as conn:  # residency: none of them may be there
                        held = conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"),
                                            {"t": tenant}).scalar()
                    results[label][peer] = {"rows": int(held or 0), "note": "outside the zone: never sent"}
        out["lag"] = results
        for e in engines.values():
            e.dispose()
    finally:
        dev.down(purge=True)
    print(f"\ncommit-to-apply lag from {ORIGIN}, 4 regions on loopback (zone eu = {', '.join(EU)}), "
          f"{out['achieved_rate']:.0f} single-run commits/s for {args.seconds:g}s, zoned and unzoned tenants in turn")
    print(f"  {'what':<22} {'to':<11} {'rows':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, per_peer in out["lag"].items():
        for peer, s in per_peer.items():
            if "p50_ms" in s:
                print(f"  {label:<22} {peer:<11} {s['rows']:>6} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}")
            else:
                print(f"  {label:<22} {peer:<11} {s['rows']:>6}   ({s['note']})")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
