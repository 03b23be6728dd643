"""What a completion costs in the database: ``rm_complete_task`` timed on one region's PostgreSQL.

One region of a dev mesh (PostgreSQL and Redis only, no workers, no replication), migrated to head.
The script creates ``--tasks`` one-step runs, claims each task, then completes them one by one, each
in its own transaction, and reports the median and mean wall time of ``SELECT rm_complete_task``
(the statement and its commit, as the worker's client sees them), and, server side, the best
round's time per ``rm_lock_tenant_runs(rm_task_tenant(task))`` (what 0022 added to a completion). ``--function F --as-of REV``
compares two definitions of one function on one server, rounds alternating: ``F`` as revision
``REV`` left it (``regionmesh.migrations.history``) and as head has it.

    python3 -m bench.completion_cost --tasks 2000 --rounds 3 --function rm_task_tenant --as-of 0022
    python3 -m bench.completion_cost --tasks 1000 --rounds 4 --trigger rm_fair_track
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from regionmesh.migrations import history
from regionmesh.models.engine import make_engine
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.devmesh.folder import DATABASE

REGION = "us-east"
STEP: dict[str, Any] = {"key": "only", "handler": "noop", "depends_on": [], "map_over": None, "max_attempts": 1,
        "backoff_base_s": 1.0, "backoff_max_s": 1.0, "timeout_s": 3600.0}


def _prepare(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO local_lease (id, held_until) VALUES (1, now() + interval '1 day') "
                          "ON CONFLICT (id) DO UPDATE SET held_until = EXCLUDED.held_until"))
        conn.execute(text("DELETE FROM local_fence"))


def _claimed_tasks(engine: Engine, n: int, spent: list[float] | None = None) -> list[str]:
    """``n`` one-step runs of one tenant, their tasks claimed here: ready to complete. ``spent``
    gets the seconds each run's creation and claim took (one transaction for all, no commit each)."""
    tasks: list[str] = []
    tenant = f"cost-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('regionmesh.region', :r, false)"), {"r": REGION})
        for _ in range(n):
            t0 = time.perf_counter()
            run_id = str(uuid.uuid4())
            run = {"id": run_id, "tenant_id": tenant, "idempotency_key": run_id, "workflow": "cost", "input": {},
                   "status": "running", "owner_region": REGION, "submission_id": run_id,
                   "submitted_region": REGION, "epoch": 1}
            ready = conn.execute(text("SELECT rm_create_run(CAST(:r AS jsonb), CAST(:s AS jsonb))"),
                                 {"r": json.dumps(run), "s": json.dumps([STEP])}).scalar_one()
            for task in ready:
                claim = conn.execute(text("SELECT rm_claim_task(:t, :r, 'cost-worker', NULL)"),
                                     {"t": task, "r": REGION}).scalar_one()
                assert claim is not None, "claim refused: no lease here?"
                tasks.append(str(task))
            if spent is not None:
                spent.append(time.perf_counter() - t0)
    return tasks


def _time_completions(engine: Engine, tasks: list[str]) -> list[float]:
    """Seconds per completion (statement and commit), each in its own transaction."""
    out: list[float] = []
    with engine.connect() as conn:
        conn.execute(text("SELECT set_config('regionmesh.region', :r, false)"), {"r": REGION})
        conn.commit()
        for task in tasks:
            t0 = time.perf_counter()
            released = conn.execute(text("SELECT rm_complete_task(:t, 1, CAST('{}' AS jsonb))"),
                                    {"t": task}).scalar_one()
            conn.commit()
            out.append(time.perf_counter() - t0)
            assert released is not None, f"completion of {task} discarded"
    return out


PROBE = """
CREATE OR REPLACE FUNCTION pg_temp.rm_cost_probe(p_n int) RETURNS double precision LANGUAGE plpgsql AS $probe$
DECLARE
  t0 timestamptz := clock_timestamp();
  r record;
BEGIN
  FOR r IN SELECT id FROM step_tasks ORDER BY id LIMIT p_n LOOP
    PERFORM rm_lock_tenant_runs(rm_task_tenant(r.id), false);
  END LOOP;
  RETURN extract(epoch FROM clock_timestamp() - t0) / p_n;
END $probe$
"""


def _time_lookup(engine: Engine, n: int) -> float:
    """Seconds per tenant lookup and lock as a completion makes them, server side (no round trip,
    no commit): one PL/pgSQL loop of ``n`` calls, one transaction."""
    with engine.begin() as conn:
        conn.exec_driver_sql(PROBE)
        return float(conn.execute(text("SELECT pg_temp.rm_cost_probe(:n)"), {"n": n}).scalar_one())


def _install(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median_us": round(statistics.median(samples) * 1e6, 1),
            "mean_us": round(statistics.fmean(samples) * 1e6, 1), "n": len(samples)}


def measure(engine: Engine, *, tasks: int, rounds: int, function: str | None, as_of: str | None,
            trigger: str | None = None) -> dict[str, Any]:
    """Alternating rounds of head and (when given) ``function`` as of revision ``as_of``, or with
    ``trigger`` (on step_tasks) enabled and disabled."""
    _prepare(engine)
    builds: dict[str, str | None] = {"head": None}
    if trigger:
        builds = {f"{trigger} enabled": f"ALTER TABLE step_tasks ENABLE TRIGGER {trigger}",
                  f"{trigger} disabled": f"ALTER TABLE step_tasks DISABLE TRIGGER {trigger}"}
    elif function and as_of:
        head = max(history.revision_files())
        builds = {f"{function} as of {as_of}": history.definition(function, as_of),
                  f"{function} as of {head} (head)": history.definition(function, head)}
    samples: dict[str, list[float]] = {name: [] for name in builds}
    created: dict[str, list[float]] = {name: [] for name in builds}
    lookups: dict[str, list[float]] = {name: [] for name in builds}
    _time_completions(engine, _claimed_tasks(engine, min(tasks, 200)))  # warm caches
    for _ in range(rounds):
        for name, statement in builds.items():
            if statement is not None:
                _install(engine, statement)
            samples[name] += _time_completions(engine, _claimed_tasks(engine, tasks, created[name]))
            lookups[name].append(_time_lookup(engine, tasks))
    return {name: {"completion": _summary(s), "create_and_claim": _summary(created[name]),
                   "tenant_lookup_and_lock_us": round(min(lookups[name]) * 1e6, 1)}
            for name, s in samples.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m bench.completion_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="completions per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--function", help="a function to time as of --as-of against head's definition")
    ap.add_argument("--as-of", help="the revision whose definition of --function to compare (e.g. 0022)")
    ap.add_argument("--trigger", help="a trigger on step_tasks to time enabled against disabled (e.g. rm_fair_track)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="rm-completion-cost-", dir="/tmp"))
    root.chmod(0o755)
    dev = DevMesh(root)
    try:
        dev.up([REGION], replicate=False)
        engine = make_engine(dev.admin_url(REGION, DATABASE), pool_size=1)
        try:
            print(json.dumps(measure(engine, tasks=args.tasks, rounds=args.rounds, function=args.function,
                                     as_of=args.as_of, trigger=args.trigger), indent=1))
        finally:
            engine.dispose()
    finally:
        dev.down(purge=True)


if __name__ == "__main__":
    main()
