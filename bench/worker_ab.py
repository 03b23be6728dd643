"""Two worker builds on one mesh: the same broker, database and producer, only the worker differs.

    python -m bench.snapshot /tmp/a REV_A; python -m bench.snapshot /tmp/b REV_B
    python -m bench.worker_ab /tmp/a /tmp/b [--runs 1000] [--chains 100] [--rounds 3] [--out FILE]

Starts a one-region dev mesh, then a worker (concurrency 2) of each build in turn (the build's
snapshot as its PYTHONPATH and working directory), order alternating by round; each submits 1-step
runs, then 10-step chains, and records the rate and the CPU seconds per step of the worker (main
and pool processes) and of redis-server. CPU per step is the figure to read on a shared machine:
the rates move with whatever else runs there. Written for the broker adapter's recorded pop
(bench/results/throughput-after-pop-record.json, ``ab_same_mesh``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any

import psutil
import redis
from sqlalchemy import Engine, text

from bench.common import scratch_mesh, write_json
from regionmesh.client import submit
from regionmesh.models.engine import make_engine
from regionmesh.supervisor import wait_for

REGION = "bench"


def succeeded(engine: Engine, workflow: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE workflow = :w AND status = 'succeeded'"),
                                {"w": workflow}).scalar_one())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (pool processes)."""
    try:
        proc = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0.0


def measure(engine: Engine, config: Any, workflow: str, n: int, worker: int, redis_pid: int) -> dict[str, float]:
    steps = n * (1 if workflow == "bench_1" else 10)
    base = succeeded(engine, workflow)
    w0, r0, t0 = cpu_seconds(worker), cpu_seconds(redis_pid), time.perf_counter()
    for i in range(n):
        submit(f"t{i % 50}", workflow, {}, None, region=REGION, config=config)
    wait_for(lambda: succeeded(engine, workflow) >= base + n, 600, f"{n} {workflow} runs", interval=0.02)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "runs_per_s": n / seconds, "steps_per_s": steps / seconds,
            "worker_cpu_ms_per_step": (cpu_seconds(worker) - w0) * 1000 / steps,
            "redis_cpu_ms_per_step": (cpu_seconds(redis_pid) - r0) * 1000 / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="worker-ab.json")
    args = parser.parse_args()
    builds = {"before": args.before, "after": args.after}
    dev = scratch_mesh()
    rows: list[dict[str, Any]] = []
    try:
        config = dev.up([REGION], workers=0)
        engine = make_engine(config.regions[REGION].database_url, region=REGION)
        broker = redis.Redis.from_url(config.regions[REGION].broker_url)
        redis_pid = dev.region(REGION).redis.pid or 0
        for rnd in range(args.rounds):
            for build in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
                path = builds[build]
                rec = dev.start_worker(REGION, concurrency=2, extra_env={
                    "REGIONMESH_WORKFLOWS": "bench.workflows", "PYTHONPATH": path, "REGIONMESH_WORKER_CWD": path})
                base = succeeded(engine, "bench_1")
                for _ in range(20):
                    submit("warm", "bench_1", {}, f"warm-{uuid.uuid4()}", region=REGION, config=config)
                wait_for(lambda b=base: succeeded(engine, "bench_1") >= b + 20, 60, "the warm-up runs")
                stats = broker.info("commandstats")
                row: dict[str, Any] = {"round": rnd, "build": build,
                                       "evalsha_calls": stats.get("cmdstat_evalsha", {}).get("calls", 0)}
                row["bench_1"] = measure(engine, config, "bench_1", args.runs, rec.pid or 0, redis_pid)
                row["bench_10"] = measure(engine, config, "bench_10", args.chains, rec.pid or 0, redis_pid)
                print(json.dumps(row), flush=True)
                rows.append(row)
                dev.stop_worker(REGION, rec.name)
        engine.dispose()
    finally:
        dev.down(purge=True)
    median = {b: {wf: {k: statistics.median(r[wf][k] for r in rows if r["build"] == b) for k in rows[0][wf]}
                  for wf in ("bench_1", "bench_10")} for b in builds}
    write_json(args.out, {"args": vars(args), "median": median, "rows": rows})


if __name__ == "__main__":
    main()
