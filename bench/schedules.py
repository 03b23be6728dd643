"""Tick lateness of many schedules firing every minute, and what firing costs the region.

    python -m bench.schedules [--schedules 1000] [--tenants 100] [--minutes 3]

One region on loopback with one worker (its ticker fires every tick: workers/ticker.py). The
schedules (cron ``* * * * *``, workflow ``t_tick``: one step) are written straight into the
region's database, spread over --tenants tenants. For every tick that falls in the measured window
(whole minutes after a first minute of warm-up), lateness is the run's ``created_at`` minus the
tick's instant (both the region's database clock), and done is its ``finished_at`` minus the
instant. Also counted: ticks missing or doubled, the worker's CPU (main process: the ticker; pool:
the steps) and the database's commits and rows read in the window. Prints a table and writes
bench/results/schedules.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from sqlalchemy import text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.models import schedules
from regionmesh.models.engine import make_engine
from regionmesh.supervisor import wait_for

REGION = "us-east"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99), "max_ms": max(values, default=0.0),
            "mean_ms": statistics.fmean(values) if values else float("nan")}


def cpu_s(pids: list[int]) -> dict[str, float]:
    """CPU seconds of the workers' main processes and of their pool children."""
    main = pool = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            t = p.cpu_times()
            main += t.user + t.system
            for c in p.children(recursive=True):
                ct = c.cpu_times()
                pool += ct.user + ct.system
        except psutil.Error:
            continue
    return {"main": main, "pool": pool}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=3, help="measured minutes (after one of warm-up)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "schedules.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    out: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "out"}, "regions": [REGION],
                           "workers": 1}
    try:
        config = dev.up([REGION], workers=1, worker_env={
            "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
            "PYTHONPATH": str(ROOT)})
        engine = make_engine(config.regions[REGION].database_url, region=REGION)
        for i in range(args.schedules):
            schedules.upsert(engine, {"tenant_id": f"sched-{i % args.tenants}", "name": f"s{i}", "cron": "* * * * *",
                                      "every_s": None, "tz": "UTC", "workflow": "t_tick", "input": {}, "overlap": "skip",
                                      "catch_up": "none", "jitter_s": 0.0, "paused": False, "note": None})
        now = schedules.db_now(engine)
        start = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)  # after a warm-up minute
        end = start + timedelta(minutes=args.minutes)
        pids = [w.pid for w in dev.workers(REGION) if w.pid is not None]

        def stats() -> tuple[int, int]:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT xact_commit, tup_returned + tup_fetched FROM pg_stat_database "
                                        "WHERE datname = current_database()")).one()
            return int(row[0]), int(row[1])

        wait_for(lambda: schedules.db_now(engine) >= start - timedelta(seconds=2), 240, "the measured window", interval=1.0)
        cpu0, db0, t0 = cpu_s(pids), stats(), time.monotonic()
        wait_for(lambda: schedules.db_now(engine) >= end - timedelta(seconds=2), 60 * args.minutes + 60, "its end", interval=1.0)
        cpu1, db1, wall = cpu_s(pids), stats(), time.monotonic() - t0
        expected = args.schedules * args.minutes

        def fired() -> list[tuple[str, datetime, datetime, datetime | None]]:
            with engine.connect() as conn:
                got = conn.execute(text("SELECT idempotency_key, created_at, finished_at FROM workflow_runs "
                                        "WHERE idempotency_key LIKE 'rm-schedule:%'")).all()
            return [(k, c, datetime.strptime(k.split(":", 2)[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC), f)
                    for k, c, f in got]

        def in_window() -> list[tuple[str, datetime, datetime, datetime | None]]:
            return [r for r in fired() if start <= r[2] < end]

        wait_for(lambda: len(in_window()) >= expected and all(r[3] is not None for r in in_window()), 180,
                 "every tick of the window to run", interval=1.0)
        rows = in_window()
        ticks = {(r[0]) for r in rows}
        late = [(r[1] - r[2]).total_seconds() * 1000 for r in rows]
        done = [(r[3] - r[2]).total_seconds() * 1000 for r in rows if r[3] is not None]
        out.update({
            "window": {"start": start.astimezone(UTC).isoformat(), "minutes": args.minutes, "wall_s": round(wall, 1)},
            "ticks": {"expected": expected, "runs": len(rows), "distinct": len(ticks)},
            "lateness": summary(late), "tick_to_done": summary(done),
            "worker_cpu_s_per_min": {k: round((cpu1[k] - cpu0[k]) / (wall / 60), 2) for k in cpu0},
            "db_per_min": {"commits": round((db1[0] - db0[0]) / (wall / 60)),
                           "rows_read": round((db1[1] - db0[1]) / (wall / 60))},
        })
        engine.dispose()
    finally:
        dev.down(purge=True)
    lat, dn = out["lateness"], out["tick_to_done"]
    print(f"\n{args.schedules} schedules every minute over {args.tenants} tenants, 1 region, 1 worker, "
          f"{args.minutes} measured minutes")
    print(f"  ticks expected {out['ticks']['expected']}, runs {out['ticks']['runs']}, distinct {out['ticks']['distinct']}")
    print(f"  {'':<22} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    print(f"  {'tick -> run created':<22} {lat['p50_ms']:>9.0f} {lat['p99_ms']:>9.0f} {lat['max_ms']:>9.0f}")
    print(f"  {'tick -> run finished':<22} {dn['p50_ms']:>9.0f} {dn['p99_ms']:>9.0f} {dn['max_ms']:>9.0f}")
    print(f"  worker CPU s/min: main (ticker) {out['worker_cpu_s_per_min']['main']}, pool (steps) "
          f"{out['worker_cpu_s_per_min']['pool']}; database per min: {out['db_per_min']['commits']} commits, "
          f"{out['db_per_min']['rows_read']} rows read")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
