"""Throughput: raw Celery vs a Celery canvas chain vs regionmesh, one region, one run.

    python -m bench.throughput [--tasks 4000] [--chains 300] [--runs 2000] [--chain-runs 300] [--appendfsync always]
                               [--lease-rounds 6]

Starts its own PostgreSQL 16 + Redis (a one-region dev mesh in a temp folder)
and, for each contender in turn, one worker with the same concurrency on the
same broker. Then the lease's cost: regionmesh again, with the lease check
(rm_may_work() and rm_guard_work() in every run creation, claim and completion, and the
check at their commit) and with them replaced by a constant, alternating. Prints a table and
writes bench/results/throughput.json.
``--appendfsync everysec`` measures the broker as it was before the durability fix (the dev mesh
writes ``always``; see docs/explanation/durability.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import chain
from sqlalchemy import text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.client import submit
from regionmesh.models import schema_sql
from regionmesh.models.engine import make_engine
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.supervisor import spawn, terminate, wait_for

REGION = "bench"


def _wait_counter(r: redis.Redis, key: str, target: int, timeout: float) -> float:
    wait_for(lambda: int(r.get(key) or 0) >= target, timeout, f"{key} to reach {target}", interval=0.005)
    return time.perf_counter()


def raw_celery(broker: str, n_tasks: int, n_chains: int, concurrency: int, logdir: Path) -> dict[str, Any]:
    env = dict(os.environ, BENCH_BROKER_URL=broker, PYTHONPATH=str(ROOT))
    pid = spawn([sys.executable, "-m", "celery", "-A", "bench.baseline_app", "worker", "-Q", "bench.raw",
                 "-c", str(concurrency), "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
                logdir / "baseline-worker.log", env=env, cwd=str(ROOT))
    os.environ["BENCH_BROKER_URL"] = broker
    from bench import baseline_app

    r = redis.Redis.from_url(broker)
    try:
        r.delete("bench:raw", "bench:chain", "bench:warm")
        for _ in range(20):
            baseline_app.noop.apply_async(kwargs={"key": "bench:warm"})
        _wait_counter(r, "bench:warm", 20, 60)
        start = time.perf_counter()
        with baseline_app.app.producer_or_acquire() as producer:
            for _ in range(n_tasks):
                baseline_app.noop.apply_async(producer=producer)
        published = time.perf_counter()
        end = _wait_counter(r, "bench:raw", n_tasks, 600)
        raw = {"tasks": n_tasks, "seconds": end - start, "tasks_per_s": n_tasks / (end - start),
               "publish_per_s": n_tasks / (published - start)}
        start = time.perf_counter()
        for _ in range(n_chains):
            chain(*[baseline_app.link.si() for _ in range(9)], baseline_app.chain_end.si()).apply_async()
        end = _wait_counter(r, "bench:chain", n_chains, 600)
        canvas = {"chains": n_chains, "seconds": end - start, "chains_per_s": n_chains / (end - start),
                  "tasks_per_s": 10 * n_chains / (end - start)}
    finally:
        terminate(pid, group=True)
    return {"raw": raw, "canvas_chain": canvas}


def _succeeded(engine: Any, workflow: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE workflow = :w AND status = 'succeeded'"),
                                {"w": workflow}).scalar_one())


def _wait_runs(engine: Any, workflow: str, target: int, timeout: float) -> float:
    wait_for(lambda: _succeeded(engine, workflow) >= target, timeout, f"{target} {workflow} runs", interval=0.02)
    return time.perf_counter()


def _throughput(engine: Any, config: Any, n_runs: int, n_chain_runs: int) -> dict[str, Any]:
    """1-step runs, then 10-step chains, each from submit to the last run finished."""
    out: dict[str, Any] = {}
    before = _succeeded(engine, "bench_1")
    start = time.perf_counter()
    for i in range(n_runs):
        submit(f"t{i % 50}", "bench_1", {}, None, region=REGION, config=config)
    published = time.perf_counter()
    end = _wait_runs(engine, "bench_1", before + n_runs, 900)
    out["one_step"] = {"runs": n_runs, "seconds": end - start, "runs_per_s": n_runs / (end - start),
                       "steps_per_s": n_runs / (end - start), "submit_per_s": n_runs / (published - start)}
    before = _succeeded(engine, "bench_10")
    start = time.perf_counter()
    for i in range(n_chain_runs):
        submit(f"t{i % 50}", "bench_10", {}, None, region=REGION, config=config)
    end = _wait_runs(engine, "bench_10", before + n_chain_runs, 900)
    out["ten_step"] = {"runs": n_chain_runs, "seconds": end - start, "runs_per_s": n_chain_runs / (end - start),
                       "steps_per_s": 10 * n_chain_runs / (end - start)}
    return out


def _lease_check(admin: Any, on: bool) -> None:
    """Put rm_may_work() and rm_guard_work() back as lease.sql and claims.sql define them, or make
    them a constant true: the same engine without the lease and fence check in every creation,
    claim and completion, at their start and (rm_guard_work marks the transaction for
    rm_lease_at_commit, 0021) at their commit."""
    with admin.begin() as conn:
        if on:
            schema_sql.apply(conn, "lease.sql", "claims.sql")
        else:
            for name in ("rm_may_work", "rm_guard_work"):
                conn.exec_driver_sql(f"CREATE OR REPLACE FUNCTION {name}() RETURNS boolean LANGUAGE sql VOLATILE "
                                     "AS $$ SELECT true $$")


def regionmesh_runs(dev: DevMesh, n_runs: int, n_chain_runs: int, n_latency: int, concurrency: int,
                    lease_rounds: int) -> dict[str, Any]:
    config = dev.up([REGION], workers=0)
    dev.start_worker(REGION, concurrency=concurrency, extra_env={
        "REGIONMESH_WORKFLOWS": "bench.workflows", "PYTHONPATH": str(ROOT),
    })
    engine = make_engine(config.regions[REGION].database_url, region=REGION)
    admin = make_engine(dev.admin_url(REGION, DATABASE), pool_size=1)
    out: dict[str, Any] = {}
    try:
        for i in range(20):
            submit("warm", "bench_1", {}, f"warm-{i}", region=REGION, config=config)
        _wait_runs(engine, "bench_1", 20, 60)
        out |= _throughput(engine, config, n_runs, n_chain_runs)
        # Latency, paced well below saturation: submit -> run finished (same host clock).
        latencies: dict[str, list[float]] = {"bench_1": [], "bench_10": []}
        for workflow in latencies:
            before = _succeeded(engine, workflow)
            ids = []
            for i in range(n_latency):
                sent = time.time()
                ids.append((submit("lat", workflow, {}, f"lat-{workflow}-{i}-{uuid.uuid4()}", region=REGION, config=config).run_id, sent))
                time.sleep(0.02 if workflow == "bench_1" else 0.08)
            _wait_runs(engine, workflow, before + n_latency, 300)
            with engine.connect() as conn:
                finished = dict(conn.execute(text("SELECT id, extract(epoch FROM finished_at) FROM workflow_runs WHERE tenant_id='lat' AND workflow=:w"),
                                             {"w": workflow}).all())
            latencies[workflow] = sorted((float(finished[rid]) - sent) * 1000 for rid, sent in ids)
        for workflow, values in latencies.items():
            out[f"latency_ms_{workflow}"] = {
                "p50": statistics.median(values), "p99": values[min(len(values) - 1, int(0.99 * len(values)))], "n": len(values),
            }
        # The lease's cost: the same engine with and without the check, in pairs whose order
        # alternates (on-off, off-on, ...) so that drift of a shared machine falls on both alike;
        # the cost is the median over the pairs of 1 - on/off.
        rounds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        try:
            for i in range(lease_rounds):
                for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    _lease_check(admin, mode == "on")
                    rounds[mode].append(_throughput(engine, config, n_runs, n_chain_runs))
        finally:
            _lease_check(admin, True)
        if lease_rounds:
            out["lease_cost"] = {
                mode: {k: statistics.mean(r[k]["steps_per_s"] for r in rs) for k in ("one_step", "ten_step")}
                for mode, rs in rounds.items()} | {"rounds": rounds} | {
                "cost": {k: statistics.median(1 - on[k]["steps_per_s"] / off[k]["steps_per_s"]
                                              for on, off in zip(rounds["on"], rounds["off"], strict=True))
                         for k in ("one_step", "ten_step")}}
    finally:
        engine.dispose()
        admin.dispose()
        for w in dev.workers(REGION):
            dev.stop_worker(REGION, w.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--chains", type=int, default=300)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--chain-runs", type=int, default=300)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--lease-rounds", type=int, default=6,
                        help="pairs of regionmesh runs with and without the lease check, order alternating (0: skip)")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always",
                        help="the bench Redis's AOF fsync policy (the dev mesh's is always)")
    parser.add_argument("--out", default=None, help="default bench/results/throughput[-everysec].json")
    args = parser.parse_args()
    suffix = "" if args.appendfsync == "always" else f"-{args.appendfsync}"
    args.out = args.out or str(ROOT / "bench" / "results" / f"throughput{suffix}.json")

    dev = scratch_mesh()
    root = dev.root
    try:
        config = dev.up([REGION], workers=0)
        broker = config.regions[REGION].broker_url
        redis.Redis.from_url(broker).config_set("appendfsync", args.appendfsync)
        base = raw_celery(broker, args.tasks, args.chains, args.concurrency, root / "logs")
        rm = regionmesh_runs(dev, args.runs, args.chain_runs, args.latency_runs, args.concurrency, args.lease_rounds)
    finally:
        dev.down(purge=True)
    raw_tps = base["raw"]["tasks_per_s"]
    chain_tps = base["canvas_chain"]["tasks_per_s"]
    rows = [
        ("raw Celery no-op tasks", f"{raw_tps:,.0f} tasks/s", ""),
        ("Celery canvas chain x10", f"{base['canvas_chain']['chains_per_s']:,.1f} chains/s", f"{chain_tps:,.0f} tasks/s"),
        ("regionmesh 1-step runs", f"{rm['one_step']['runs_per_s']:,.0f} runs/s", f"{rm['one_step']['steps_per_s']:,.0f} steps/s"),
        ("regionmesh 10-step chain", f"{rm['ten_step']['runs_per_s']:,.1f} runs/s", f"{rm['ten_step']['steps_per_s']:,.0f} steps/s"),
        ("latency 1-step (p50/p99)", f"{rm['latency_ms_bench_1']['p50']:.1f} / {rm['latency_ms_bench_1']['p99']:.1f} ms", ""),
        ("latency 10-step (p50/p99)", f"{rm['latency_ms_bench_10']['p50']:.1f} / {rm['latency_ms_bench_10']['p99']:.1f} ms", ""),
    ]
    best_steps = max(rm["one_step"]["steps_per_s"], rm["ten_step"]["steps_per_s"])
    targets = {
        "steps_vs_raw": best_steps / raw_tps,
        "ten_step_steps_vs_raw": rm["ten_step"]["steps_per_s"] / raw_tps,
        "ten_step_steps_vs_canvas_tasks": rm["ten_step"]["steps_per_s"] / chain_tps,
    }
    if "lease_cost" in rm:
        cost = rm["lease_cost"]
        for k, label in (("one_step", "1-step"), ("ten_step", "10-step")):
            on, off = cost["on"][k], cost["off"][k]
            targets[f"lease_cost_{k}"] = cost["cost"][k]
            rows.append((f"lease check on/off, {label}", f"{on:,.0f} / {off:,.0f} steps/s",
                         f"cost {cost['cost'][k]:+.1%}"))
    width = max(len(r[0]) for r in rows)
    print(f"\nthroughput, one region, worker concurrency {args.concurrency} (prefork), same Redis broker "
          f"(appendfsync {args.appendfsync})")
    for name, a, b in rows:
        print(f"  {name:<{width}}  {a:>22}  {b:>16}")
    print(f"  regionmesh steps/s vs raw Celery: {targets['steps_vs_raw']:.0%} (target >= 50%); "
          f"10-step steps/s vs canvas tasks/s: {targets['ten_step_steps_vs_canvas_tasks']:.0%} (target >= 100%)")
    if "lease_cost_one_step" in targets:
        print(f"  lease cost (median of {args.lease_rounds} alternating pairs): 1-step {targets['lease_cost_one_step']:.1%}, "
              f"10-step {targets['lease_cost_ten_step']:.1%} (target < 5%)")
    write_json(args.out, {"args": vars(args), "baseline": base, "regionmesh": rm, "ratios": targets})


if __name__ == "__main__":
    main()
