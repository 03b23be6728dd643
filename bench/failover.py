"""Failover time with leases, and what the lease check costs per state change.

    python -m bench.failover [--lease 10] [--drift 0.01] [--margin 1] [--runs 3] [--fault kill|cut]

1. On a three-region dev mesh (one worker per region, every region on the same lease settings),
   a producer submits a run for one of eu-west's tenants through us-east every 100 ms. At t0
   eu-west is SIGKILLed (PostgreSQL, Redis, workers), or with ``--fault cut`` cut off from its
   peers (every replication link to and from it severed at a TCP proxy; it keeps running and
   stops itself when its lease runs out), and `failover eu-west --to us-east` starts at once
   (``--even-if-reachable`` for a cut region); it waits for eu-west's lease to expire. Measured from t0: when the failover returned, and
   when the first run submitted after t0 executed its first step in us-east (ledger-free: the
   step's ``executed_region`` and ``started_at`` in us-east's copy, same host clock).
   The bound the design gives: L·(1+ρ)+margin after the peers' last acknowledgement.
2. The lease's cost per state change, side by side in the same database: `SELECT rm_may_work()`
   against `SELECT 1`, and a claim-shaped guarded update with and without the check.

Prints a table and writes bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from sqlalchemy import text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import subscribing
from regionmesh.models.engine import engine_for, make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.failover import failover, lease_status
from regionmesh.replication.setup import conninfo
from regionmesh.routing.hashing import home_by_hash
from regionmesh.supervisor import wait_for
from regionmesh.testing.proxy import Proxy

REGIONS = ["us-east", "eu-west", "ap-south"]


def one_failover(args: argparse.Namespace) -> dict[str, float]:
    dev = scratch_mesh()
    proxies: list[Proxy] = []
    env = {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples", "REGIONMESH_LEASE_S": str(args.lease),
           "REGIONMESH_CLOCK_DRIFT": str(args.drift), "REGIONMESH_LEASE_MARGIN_S": str(args.margin),
           "REGIONMESH_RECONCILE_INTERVAL_S": "0.5"}
    try:
        dev.up(REGIONS, workers=1, worker_env=env)
        config = load_config(str(dev.mesh_file))
        victim, heir = "eu-west", "us-east"
        if args.fault == "cut":
            proxies = _route_through_proxies(config, victim)
        wait_for(lambda: all(s.held for s in lease_status(config)), 60, "every lease")
        tenant = next(t for i in range(5000) if home_by_hash(t := f"fo-{i}", REGIONS) == victim)
        heir_engine = make_engine(config.regions[heir].database_url, region=heir)
        sent: list[tuple[float, uuid.UUID]] = []
        stop = threading.Event()

        def produce() -> None:
            while not stop.is_set():
                t = time.time()
                r = submit(tenant, "onboard", {"email": "f@example.com"}, f"fo-{uuid.uuid4()}", region=heir,
                           config=config, resolve_home=False)
                sent.append((t, r.run_id))
                time.sleep(0.1)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        time.sleep(2)
        t0 = time.time()
        if args.fault == "cut":
            for proxy in proxies:
                proxy.sever()
        else:
            dev.kill_region(victim)
        report = failover(config, victim, heir, timeout_s=120, even_if_reachable=args.fault == "cut")
        t_failover = time.time() - t0

        def first_executed() -> float | None:
            after = [rid for t, rid in sent if t > t0]
            if not after:
                return None
            with heir_engine.connect() as conn:
                started = conn.execute(text(
                    """SELECT min(extract(epoch FROM t.started_at)) FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id
                        WHERE r.id = ANY(:i) AND t.executed_region = :h"""), {"i": after, "h": heir}).scalar()
            return None if started is None else float(started)

        wait_for(lambda: first_executed() is not None, 120, "a new run of the victim's tenant to execute in the heir")
        started = first_executed()
        stop.set()
        producer.join(timeout=5)
        heir_engine.dispose()
        return {"failover_returned_s": t_failover, "waited_in_failover_s": report.waited_s,
                "first_new_run_executing_s": float(started or 0.0) - t0,
                "bound_s": args.lease * (1 + args.drift) + args.margin}
    finally:
        for proxy in proxies:
            proxy.close()
        dev.down(purge=True)


def check_cost(n: int) -> dict[str, float]:
    dev = scratch_mesh()
    try:
        config = dev.up(["bench"], workers=0)
        engine = make_engine(config.regions["bench"].database_url, region="bench")
        out: dict[str, float] = {}
        with engine.connect() as conn:
            conn.execute(text("CREATE TEMP TABLE t (id int PRIMARY KEY, status text)"))
            conn.execute(text("INSERT INTO t SELECT g, 'queued' FROM generate_series(1, :n) g"), {"n": n})
            for label, sql in (("select_1", "SELECT 1"), ("rm_may_work", "SELECT rm_may_work()")):
                t = time.perf_counter()
                for _ in range(n):
                    conn.execute(text(sql))
                out[f"{label}_us"] = (time.perf_counter() - t) / n * 1e6
            for label, guard in (("guarded_update", "true"), ("guarded_update_with_lease", "rm_may_work()")):
                conn.execute(text("UPDATE t SET status = 'queued'"))
                t = time.perf_counter()
                for i in range(1, n + 1):
                    conn.execute(text(f"UPDATE t SET status = 'running' WHERE id = :i AND status = 'queued' AND {guard}"),
                                 {"i": i})
                out[f"{label}_us"] = (time.perf_counter() - t) / n * 1e6
            conn.rollback()
        engine.dispose()
        out["lease_check_overhead_us"] = out["guarded_update_with_lease_us"] - out["guarded_update_us"]
        return out
    finally:
        dev.down(purge=True)


def _route_through_proxies(config: MeshConfig, region: str) -> list[Proxy]:
    """Every subscription to and from ``region`` through a TCP proxy this process can sever."""
    out = []
    for sub in REGIONS:
        for pub in REGIONS:
            if sub == pub or region not in (sub, pub):
                continue
            port = int(config.regions[pub].peer_conninfo.split("port=")[1].split()[0])
            proxy = Proxy(port)
            info = conninfo(config, pub, sub).replace(f"port={port}", f"port={proxy.port}")
            subscribing.set_subscription_connection(engine_for(config, sub), subscription_name(sub, pub), info)
            out.append(proxy)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fault", choices=("kill", "cut"), default="kill",
                        help="SIGKILL the region, or cut its replication links (it keeps running)")
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--out", default=None, help="default bench/results/failover[-cut].json")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / ("failover.json" if args.fault == "kill" else "failover-cut.json"))
    runs = [one_failover(args) for _ in range(args.runs)]
    cost = check_cost(args.checks)
    print(f"\nfailover after a {args.fault} with L={args.lease:g}s, rho={args.drift:g}, margin={args.margin:g}s "
          f"(bound {runs[0]['bound_s']:.1f}s after the last acknowledgement), {args.runs} run(s):")
    print(f"  {'measure':44} {'median':>8} {'min':>8} {'max':>8}")
    for key in ("failover_returned_s", "waited_in_failover_s", "first_new_run_executing_s"):
        vals = [r[key] for r in runs]
        print(f"  {key:44} {statistics.median(vals):8.2f} {min(vals):8.2f} {max(vals):8.2f}")
    print("\nlease check cost per statement (one connection, same database, same run):")
    for key, value in cost.items():
        print(f"  {key:44} {value:8.1f} us")
    write_json(args.out, {"args": vars(args), "failovers": runs, "check_cost": cost})


if __name__ == "__main__":
    main()
