"""Replication lag and catch-up on a local three-region mesh.

    python -m bench.replication_lag [--rate 500] [--seconds 20] [--partition 60]

Commit-to-visible lag: rows go into a bench table published for the run;
each row carries its commit-side clock time (stamped just before commit)
and a replica trigger in every peer stamps the time it is applied (same
host clock). Commit timestamps cannot be used: the apply worker keeps the
origin's commit timestamp.
Catch-up: the link us-east -> eu-west is cut for --partition seconds through a
TCP proxy while writes go on; after healing, the time until eu-west has
applied the backlog gives the catch-up rate. Prints a table and writes
bench/results/replication_lag.json.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from sqlalchemy import Engine, text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.models import link_health, subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.replication.setup import conninfo, setup
from regionmesh.supervisor import wait_for
from regionmesh.testing.proxy import Proxy

REGIONS = ["us-east", "eu-west", "ap-south"]


BENCH_TABLE = """
CREATE TABLE IF NOT EXISTS bench_lag (id text PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                                      seen_at timestamptz);
CREATE OR REPLACE FUNCTION bench_lag_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.seen_at := clock_timestamp(); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS bench_lag_seen ON bench_lag;
CREATE TRIGGER bench_lag_seen BEFORE INSERT ON bench_lag FOR EACH ROW EXECUTE FUNCTION bench_lag_seen();
ALTER TABLE bench_lag ENABLE REPLICA TRIGGER bench_lag_seen;
"""


def write_load(engine: Engine, prefix: str, rate: float, seconds: float, stop: threading.Event | None = None,
               table: str = "tenant_registry") -> int:
    """Single-row transactions at ``rate`` per second for ``seconds``. Returns rows written."""
    n = 0
    start = time.perf_counter()
    with engine.connect() as conn:
        while time.perf_counter() - start < seconds and not (stop and stop.is_set()):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if table == "bench_lag":
                conn.execute(text("INSERT INTO bench_lag (id) VALUES (:t)"), {"t": f"{prefix}-{n}"})
            else:
                conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, 'us-east', 'pin')"),
                             {"t": f"{prefix}-{n}"})
            conn.commit()
            n += 1
    return n


def lags_ms(dst: Engine, prefix: str) -> list[float]:
    with dst.connect() as conn:
        rows = conn.execute(text(
            "SELECT extract(epoch FROM seen_at - sent_at) FROM bench_lag WHERE id LIKE :p AND seen_at IS NOT NULL"
        ), {"p": prefix + "-%"}).scalars().all()
    return sorted(float(v) * 1000 for v in rows)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--partition", type=float, default=60)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "replication_lag.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    out: dict[str, Any] = {"args": vars(args)}
    try:
        config = dev.up(REGIONS, workers=0)
        engines = {r: make_engine(config.regions[r].database_url, region=r) for r in REGIONS}
        for e in engines.values():
            with e.begin() as conn:
                conn.execute(text(BENCH_TABLE))
        with engines["us-east"].begin() as conn:
            conn.execute(text("ALTER PUBLICATION rm_pub ADD TABLE bench_lag"))
        for peer in REGIONS[1:]:  # the subscribers learn of the new table
            with engines[peer].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"ALTER SUBSCRIPTION {subscription_name(peer, 'us-east')} REFRESH PUBLICATION WITH (copy_data = false)"))
        # 1. Steady load: lag from us-east to each peer.
        write_load(engines["us-east"], "warm", args.rate, 1, table="bench_lag")
        for peer in REGIONS[1:]:
            wait_for(lambda p=peer: len(lags_ms(engines[p], "warm")) > 0, 60, f"{peer} to receive bench rows")
        written = write_load(engines["us-east"], "steady", args.rate, args.seconds, table="bench_lag")
        out["steady"] = {"rows": written, "achieved_rate": written / args.seconds}
        for peer in REGIONS[1:]:
            wait_for(lambda p=peer: len(lags_ms(engines[p], "steady")) >= written, 120, f"{peer} to get all rows")
            values = lags_ms(engines[peer], "steady")
            out["steady"][peer] = {"p50_ms": statistics.median(values), "p99_ms": pct(values, 0.99), "max_ms": values[-1]}
        # 2. Partition us-east -> eu-west for --partition seconds under the same load, then heal.
        port = int(config.regions["us-east"].peer_conninfo.split("port=")[1].split()[0])
        proxy = Proxy(port)
        sub = subscription_name("eu-west", "us-east")
        subscribing.set_subscription_connection(engines["eu-west"], sub,
                                                conninfo(config, "us-east").replace(f"port={port}", f"port={proxy.port}"))
        wait_for(lambda: link_health.subscriptions(engines["eu-west"])[0]["pid"] is not None, 30, "link via proxy")
        stop = threading.Event()
        counter: dict[str, int] = {}
        writer = threading.Thread(target=lambda: counter.update(n=write_load(engines["us-east"], "part", args.rate, 10 ** 6, stop)))
        proxy.sever()
        writer.start()
        time.sleep(args.partition)  # the partition itself: a duration, not a wait for a condition
        backlog_lsn = link_health.current_lsn(engines["us-east"])
        with engines["us-east"].connect() as conn:
            backlog_rows = int(conn.execute(text("SELECT count(*) FROM tenant_registry WHERE tenant_id LIKE 'part-%'")).scalar_one())
        healed = time.perf_counter()
        proxy.heal()
        wait_for(lambda: link_health.slot_caught_up(engines["us-east"], sub, backlog_lsn), 600, "eu-west to catch up", interval=0.05)
        catch_up = time.perf_counter() - healed
        stop.set()
        writer.join()
        out["partition"] = {
            "seconds": args.partition, "backlog_rows": backlog_rows, "catch_up_s": catch_up,
            "catch_up_rows_per_s": backlog_rows / catch_up, "write_rate": args.rate,
            "catch_up_vs_write_rate": backlog_rows / catch_up / args.rate,
        }
        proxy.close()
        setup(config)
        for e in engines.values():
            e.dispose()
    finally:
        dev.down(purge=True)
    s = out["steady"]
    print(f"\nreplication lag, 3 regions on loopback, {s['achieved_rate']:.0f} single-row commits/s in us-east for {args.seconds:g}s")
    for peer in REGIONS[1:]:
        print(f"  us-east -> {peer:<9} p50 {s[peer]['p50_ms']:7.1f} ms   p99 {s[peer]['p99_ms']:7.1f} ms   max {s[peer]['max_ms']:7.1f} ms")
    p = out["partition"]
    print(f"  partition us-east -> eu-west for {p['seconds']:g}s: backlog {p['backlog_rows']} rows, caught up in "
          f"{p['catch_up_s']:.2f}s = {p['catch_up_rows_per_s']:,.0f} rows/s ({p['catch_up_vs_write_rate']:.1f}x the write rate; target >= 5x)")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
