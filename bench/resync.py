"""Rebuilding a region: ``region resync`` of a region whose database is gone, under write load.

    python -m bench.resync [--runs 100000] [--mode dropped|wiped] [--out bench/results/resync.json]

Starts a three-region dev mesh (no workers), loads ``--runs`` finished runs (a run, a step, a task
and an attempt each) in us-east and waits until every region holds them; then eu-west loses its
data (``dropped``: its links go and its database is dropped, as a lost disk would leave it;
``wiped``: its replicated tables are emptied) and is rebuilt from us-east with ``ops.rebuild``
while us-east and ap-south keep writing registry rows. Prints the time to rebuild and to verify,
and writes JSON. Not a timed test.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine, text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.config import MeshConfig
from regionmesh.models import replicated_tables, slot_copy, subscribing
from regionmesh.models.engine import dispose_all, make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.ops.rebuild import rebuild
from regionmesh.replication.setup import conninfo
from regionmesh.replication.verify import verify
from regionmesh.supervisor import wait_for

REGIONS = ["us-east", "eu-west", "ap-south"]


def load_finished_runs(engine: Engine, n: int, tag: str, days_ago: int, tenant: str | None = None) -> None:
    """``n`` finished runs with a step, a task and an attempt each, finished ``days_ago`` days ago,
    in one transaction (tenant ``tenant`` or ``tenant-<tag>``; input ``{"marker": tag}``). Local
    writes: a zoned tenant's rows get its zone stamped from its binding."""
    with engine.begin() as conn:
        conn.execute(text(
            """INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, owner_region, finished_at)
               SELECT md5(:tag || i)::uuid, :tenant, :tag || i, 'wf', jsonb_build_object('marker', :tag), 'succeeded',
                      current_setting('regionmesh.region'), clock_timestamp() - make_interval(days => :d)
                 FROM generate_series(1, :n) i"""), {"tag": tag, "n": n, "d": days_ago, "tenant": tenant or f"tenant-{tag}"})
        conn.execute(text(
            """INSERT INTO workflow_steps (id, run_id, step_key, handler, remaining_deps, status)
               SELECT md5(:tag || 's' || i)::uuid, md5(:tag || i)::uuid, 'a', 'h', 0, 'succeeded'
                 FROM generate_series(1, :n) i"""), {"tag": tag, "n": n})
        conn.execute(text(
            """INSERT INTO step_tasks (id, run_id, step_id, step_key, idempotency_key, status)
               SELECT md5(:tag || 't' || i)::uuid, md5(:tag || i)::uuid, md5(:tag || 's' || i)::uuid, 'a',
                      md5(:tag || i) || ':' || 'a', 'succeeded'
                 FROM generate_series(1, :n) i"""), {"tag": tag, "n": n})
        conn.execute(text(
            """INSERT INTO step_attempts (id, task_id, run_id, attempt, region)
               SELECT md5(:tag || 'x' || i)::uuid, md5(:tag || 't' || i)::uuid, md5(:tag || i)::uuid, 1,
                      current_setting('regionmesh.region')
                 FROM generate_series(1, :n) i"""), {"tag": tag, "n": n})


def lose_database(dev: DevMesh, config: MeshConfig, region: str, engines: dict[str, Engine]) -> None:
    """Drop ``region``'s database as a lost disk would leave the mesh: PostgreSQL drops a database
    only without subscriptions in it and slots of it, so its links go first; the peers'
    subscriptions from it stay, paused (``region resync`` drops them)."""
    for peer in (p for p in config.regions if p != region):
        subscribing.set_subscription_enabled(engines[peer], subscription_name(peer, region), False)
        subscribing.wait_worker_stopped(engines[peer], subscription_name(peer, region))
        subscribing.drop_subscription(engines[region], subscription_name(region, peer))
        slot_copy.drop_slot_if_exists(conninfo(config, region), subscription_name(peer, region))
    engines[region].dispose()
    server = make_engine(dev.admin_url(region), pool_size=1)
    try:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE "{DATABASE}" WITH (FORCE)'))
    finally:
        server.dispose()


class Writers:
    """One thread per region inserting registry rows until stopped (the mesh keeps working)."""

    def __init__(self, config: MeshConfig, regions: list[str]) -> None:
        self.config, self.stop, self.written = config, threading.Event(), dict.fromkeys(regions, 0)
        self.threads = [threading.Thread(target=self._write, args=(r,)) for r in regions]

    def _write(self, region: str) -> None:
        e = make_engine(self.config.regions[region].database_url, region=region, pool_size=1)
        try:
            while not self.stop.is_set():
                with e.begin() as conn:
                    conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, :r, 'pin')"),
                                 {"t": f"bench-{uuid.uuid4().hex}", "r": region})
                self.written[region] += 1
                self.stop.wait(0.005)
        finally:
            e.dispose()

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--mode", choices=("dropped", "wiped"), default="dropped")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "resync.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    out: dict[str, Any] = {"args": vars(args)}
    try:
        config = dev.up(REGIONS, workers=0)
        engines = {r: make_engine(config.regions[r].database_url, region=r, pool_size=2) for r in REGIONS}
        started = time.monotonic()
        for i in range(0, args.runs, 20_000):
            load_finished_runs(engines["us-east"], min(20_000, args.runs - i), f"b{i}-", days_ago=1)
        wait_for(lambda: all(count(e, "workflow_runs") >= args.runs for e in engines.values()), 600,
                 "every region to hold the runs", interval=0.5)
        out["load_s"] = time.monotonic() - started
        if args.mode == "dropped":
            lose_database(dev, config, "eu-west", engines)
        else:
            replicated_tables.wipe_replicated_tables(engines["eu-west"])
        with Writers(config, ["us-east", "ap-south"]) as writers:
            report = rebuild(config, "eu-west", seed="us-east", admin_url=dev.admin_url("eu-west", DATABASE),
                             timeout=600, say=print)
        out |= {"resync_s": report.seconds, "rows_copied": report.rows_copied, "written_meanwhile": writers.written}
        started = time.monotonic()
        result = verify(config, timeout=300)
        out |= {"verify_s": time.monotonic() - started, "identical": result.identical,
                "runs_in_eu_west": result.rows["workflow_runs"]["eu-west"]}
        for e in engines.values():
            e.dispose()
    finally:
        dispose_all()
        dev.down(purge=True)
    print(f"\nregion resync of eu-west ({args.mode}) from us-east, {args.runs:,} finished runs, "
          "us-east and ap-south writing meanwhile")
    print(f"  rows copied            {out['rows_copied']:>12,}")
    print(f"  resync                 {out['resync_s']:>11.1f} s")
    print(f"  verify                 {out['verify_s']:>11.1f} s  ({'identical' if out['identical'] else 'DIFFERENT'}, "
          f"{out['runs_in_eu_west']:,} runs in eu-west)")
    write_json(args.out, out)
    if not out["identical"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
