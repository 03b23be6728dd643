"""The console over 1,000,000 runs: response times of the run list, a run page and the mesh page.

One region of a dev mesh (PostgreSQL and Redis, no workers, no replication), migrated to head. The
script fills ``workflow_runs`` with ``--runs`` runs in SQL (``generate_series``, in chunks; not
through workers): ``--tenants`` tenants, five workflows, statuses 90% succeeded, 5% failed, 4%
running, 1% cancelled, created over the last 30 days; then a few dozen real runs (steps, tasks,
attempts) for the run page. It serves the console in this process (uvicorn on a loopback port) and
times whole HTTP responses (query, rendering, transfer) as a browser would get them: the run list
with each filter alone and combined, a page deep in a long list (keyset cursor), a run page, the mesh
page. Each is requested ``--repeat`` times after one warm-up; p50 and p99 in milliseconds.

    python3 -m bench.console                  # 1,000,000 runs; writes bench/results/console.json
    python3 -m bench.console --runs 100000 --out /tmp/console.json
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import uvicorn
from sqlalchemy import Engine, text

from bench.common import scratch_mesh, write_json
from regionmesh.models.console import RunFilter
from regionmesh.models.engine import make_engine
from regionmesh.ops.console import filters
from regionmesh.ops.console.app import create_app
from regionmesh.ops.console.auth import Policy
from regionmesh.ops.devmesh.folder import DATABASE

REGION = "us-east"
WORKFLOWS = ("onboard", "etl", "report", "billing", "sync")
TARGET_MS = 200.0
STEP: dict[str, Any] = {"key": "only", "handler": "noop", "depends_on": [], "map_over": None, "max_attempts": 1,
                        "backoff_base_s": 1.0, "backoff_max_s": 1.0, "timeout_s": 3600.0}

# Tenant g % tenants, workflow (g / 7) % 5 and status (g / 1000) % 100 vary independently: every
# tenant has runs of every workflow and status.
FILL = """
INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, owner_region, submission_id,
                           submitted_region, remaining_steps, created_at, finished_at)
SELECT md5('bench-console:' || g)::uuid, 't' || lpad((g % :tenants)::text, 4, '0'), 'k' || g,
       (ARRAY['onboard', 'etl', 'report', 'billing', 'sync'])[1 + (g / 7) % 5], '{}'::jsonb,
       CASE WHEN (g / 1000) % 100 < 90 THEN 'succeeded' WHEN (g / 1000) % 100 < 95 THEN 'failed'
            WHEN (g / 1000) % 100 < 99 THEN 'running' ELSE 'cancelled' END,
       :region, 'k' || g, :region, 0,
       :t0 + (g::double precision / :runs) * interval '30 days',
       CASE WHEN (g / 1000) % 100 BETWEEN 95 AND 98 THEN NULL
            ELSE :t0 + (g::double precision / :runs) * interval '30 days' + interval '2 seconds' END
  FROM generate_series(:lo, :hi - 1) AS g
"""


def fill(engine: Engine, runs: int, tenants: int, t0: datetime, chunk: int = 100_000) -> float:
    """Insert ``runs`` runs; returns seconds taken."""
    began = time.perf_counter()
    for lo in range(0, runs, chunk):
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('regionmesh.region', :r, false)"), {"r": REGION})
            conn.execute(text(FILL), {"tenants": tenants, "region": REGION, "t0": t0, "runs": runs, "lo": lo,
                                      "hi": min(lo + chunk, runs)})
        print(f"  {min(lo + chunk, runs):>9,} runs", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE workflow_runs"))
    return time.perf_counter() - began


def real_runs(engine: Engine, n: int) -> list[str]:
    """``n`` one-step runs made by rm_create_run, claimed and completed: steps, tasks and attempts."""
    ids = []
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('regionmesh.region', :r, false)"), {"r": REGION})
        conn.execute(text("INSERT INTO local_lease (id, held_until) VALUES (1, now() + interval '1 day') "
                          "ON CONFLICT (id) DO UPDATE SET held_until = EXCLUDED.held_until"))
        conn.execute(text("DELETE FROM local_fence"))
    for _ in range(n):
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('regionmesh.region', :r, false)"), {"r": REGION})
            run_id = str(uuid.uuid4())
            run = {"id": run_id, "tenant_id": "t0001", "idempotency_key": run_id, "workflow": "etl",
                   "input": {"n": 1}, "status": "running", "owner_region": REGION, "submission_id": run_id,
                   "submitted_region": REGION, "epoch": 1}
            ready = conn.execute(text("SELECT rm_create_run(CAST(:r AS jsonb), CAST(:s AS jsonb))"),
                                 {"r": json.dumps(run), "s": json.dumps([STEP])}).scalar_one()
            for task in ready:
                claim = conn.execute(text("SELECT rm_claim_task(:t, :r, 'bench:1', NULL)"),
                                     {"t": task, "r": REGION}).scalar_one()
                conn.execute(text("SELECT rm_complete_task(:t, :a, '{\"ok\": true}'::jsonb)"),
                             {"t": task, "a": claim["attempt"]})
        ids.append(run_id)
    return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _time(url: str, repeat: int) -> dict[str, Any]:
    def get() -> tuple[float, int]:
        began = time.perf_counter()
        with urlopen(url, timeout=60) as r:
            body = r.read()
        return time.perf_counter() - began, len(body)

    get()  # warm-up
    samples = []
    size = 0
    for _ in range(repeat):
        took, size = get()
        samples.append(took * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, max(0, round(0.99 * len(samples)) - 1))]
    return {"p50_ms": round(statistics.median(samples), 1), "p99_ms": round(p99, 1), "n": repeat, "bytes": size}


def cases(engine: Engine, t0: datetime, real: list[str]) -> dict[str, str]:
    """Name -> path of each page timed."""
    day = t0 + timedelta(days=14)
    window = {"since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat()}
    lists: dict[str, dict[str, str]] = {
        "all": {},
        "tenant": {"tenant": "t0042"},
        "status=failed": {"status": "failed"},
        "status=running": {"status": "running"},
        "workflow": {"workflow": "report"},
        "time range (1 day)": window,
        "owner region": {"owner": REGION},
        "idempotency key": {"key": "k123456"},
        "tenant+status": {"tenant": "t0042", "status": "failed"},
        "tenant+workflow": {"tenant": "t0042", "workflow": "report"},
        "status+workflow": {"status": "failed", "workflow": "report"},
        "status+time range": {"status": "failed", **window},
        "workflow+time range": {"workflow": "report", **window},
        "tenant+status+workflow+time range": {"tenant": "t0042", "status": "succeeded", "workflow": "report",
                                              **{"since": t0.isoformat(), "until": (t0 + timedelta(days=30)).isoformat()}},
    }
    out = {f"runs: {name}": "/runs?" + urlencode(q) for name, q in lists.items()}
    with engine.connect() as conn:  # a cursor half way down the succeeded runs (page 9,000 of 1,000,000)
        n = conn.execute(text("SELECT count(*) FROM workflow_runs WHERE status = 'succeeded'")).scalar_one()
        row = conn.execute(text("SELECT created_at, id FROM workflow_runs WHERE status = 'succeeded' "
                                "ORDER BY created_at DESC, id DESC OFFSET :o LIMIT 1"), {"o": n // 2}).one()
    deep = filters.query_of(RunFilter(status="succeeded", after=(row[0], row[1])))
    out[f"runs: status=succeeded, page {n // 2 // 50 + 1:,} (keyset)"] = "/runs?" + urlencode(deep)
    out["run page"] = f"/runs/{real[len(real) // 2]}"
    out["mesh page"] = "/mesh"
    return out


def measure(config: Any, engine: Engine, *, runs: int, tenants: int, repeat: int) -> dict[str, Any]:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    print(f"filling {runs:,} runs ...", flush=True)
    fill_s = fill(engine, runs, tenants, t0)
    real = real_runs(engine, 40)
    app = create_app(config, Policy(open_reads=True, viewer=None, operator=None), refresh_s=0)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    try:
        results = {}
        for name, path in cases(engine, t0, real).items():
            try:
                results[name] = _time(f"http://127.0.0.1:{port}{path}", repeat)
            except OSError as exc:  # an HTTP error or a timeout: recorded, the other pages still timed
                results[name] = {"error": str(exc)}
            print(f"  {name}: {results[name]}", flush=True)
    finally:
        server.should_exit = True
        thread.join(10)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM workflow_runs")).scalar_one()
    return {"runs": total, "tenants": tenants, "fill_s": round(fill_s, 1), "repeat": repeat, "target_ms": TARGET_MS,
            "pages": results}


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['runs']:,} runs, {result['tenants']} tenants (filled in {result['fill_s']} s); "
             f"{result['repeat']} requests each", f"{'page':<48} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}"]
    for name, r in result["pages"].items():
        if "error" in r:
            lines.append(f"{name:<48} {r['error']}")
            continue
        flag = "" if r["p99_ms"] < result["target_ms"] else "  over the 200 ms target"
        lines.append(f"{name:<48} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['bytes']:>8}{flag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m bench.console", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=50, help="requests per page timed")
    ap.add_argument("--out", default="bench/results/console.json")
    args = ap.parse_args(argv)
    dev = scratch_mesh()
    try:
        config = dev.up([REGION], replicate=False)
        engine = make_engine(dev.admin_url(REGION, DATABASE), region=REGION, pool_size=1)
        try:
            result = measure(config, engine, runs=args.runs, tenants=args.tenants, repeat=args.repeat)
        finally:
            engine.dispose()
    finally:
        dev.down(purge=True)
    result["command"] = "python3 -m bench.console " + " ".join(argv or [])
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(table(result))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
