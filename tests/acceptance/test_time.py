"""Schedules, durable timers and signals (issue 23) on a three-region mesh of its own: real
PostgreSQL, Redis and celery workers; step handlers write the external effect ledger
(regionmesh/testing/ledger.py), so runs and re-runs are counted from outside the mesh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from regionmesh.broker import STEP_MESSAGES_KEY, publisher
from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models.engine import make_engine
from regionmesh.names import SIGNAL_TASK, submit_queue
from regionmesh.ops.devmesh import DevMesh
from regionmesh.replication.verify import verify
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing import ledger
from regionmesh.workers.schedule_spec import Spec
from regionmesh.workers.submission import run_id_for
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

pytestmark = pytest.mark.acceptance

REGIONS = ["us-east", "eu-west", "ap-south"]
REPO_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_ENV = {
    "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
    "PYTHONPATH": REPO_ROOT,
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
    "REGIONMESH_REQUEUE_AFTER_S": "3",
    "REGIONMESH_LEASE_S": "4",
}


class World:
    def __init__(self, dev: DevMesh, ledger_dir: Path) -> None:
        self.dev = dev
        self.ledger_dir = ledger_dir
        self.config: MeshConfig = load_config(str(dev.mesh_file))
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r) for r in REGIONS}

    def tenant(self, home: str, prefix: str) -> str:
        return next(t for i in range(10_000) if home_by_hash(t := f"{prefix}-{home}-{i}", REGIONS) == home)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REGIONMESH_CONFIG=str(self.dev.mesh_file))
        return subprocess.run([sys.executable, "-m", "regionmesh.ops.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120, check=False)

    def ok(self, *args: str) -> str:
        res = self.cli(*args)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    def rows(self, region: str, sql: str, **params: Any) -> list[Any]:
        with self.engines[region].connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def status(self, region: str, run_id: uuid.UUID) -> str | None:
        got = self.rows(region, "SELECT status FROM workflow_runs WHERE id = :r", r=run_id)
        return got[0][0] if got else None

    def start_workers(self, region: str) -> None:
        self.dev.start_worker(region, extra_env=WORKER_ENV | {"RM_TEST_LEDGER": str(self.ledger_dir)})


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-time-")
    ledger_dir = root / "ledger"
    ledger_dir.mkdir()
    os.chmod(ledger_dir, 0o777)
    dev = DevMesh(root)
    try:
        dev.up(REGIONS, workers=1, worker_env=WORKER_ENV | {"RM_TEST_LEDGER": str(ledger_dir)})
        w = World(dev, ledger_dir)
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_a_signal_through_a_non_owner_before_the_wait_and_twice_with_one_key_is_taken_once(world: World) -> None:
    tenant = world.tenant("us-east", "sig")
    r = submit(tenant, "t_wait", {"signal": "approved", "timeout_s": 120, "sleep": {"a": 3}}, f"k-{uuid.uuid4()}",
               region="us-east", config=world.config, resolve_home=False)
    # Sent through ap-south (which does not own the run) while its first step still runs, twice, one key.
    for _ in range(2):
        world.ok("--region", "ap-south", "signal", tenant, str(r.run_id), "approved", "--payload", '{"by": "ops"}',
                 "--key", "ticket-42")
    wait_until(lambda: world.status("us-east", r.run_id) == "succeeded", 60, "the signalled run to finish")
    signals = world.rows("us-east", "SELECT key, state, received_region, delivered_to FROM run_signals WHERE run_id = :r",
                         r=r.run_id)
    assert [(s[0], s[1], s[2]) for s in signals] == [("ticket-42", "delivered", "ap-south")]
    out = world.rows("us-east", "SELECT output FROM workflow_steps WHERE run_id = :r AND step_key = 'w'", r=r.run_id)[0][0]
    assert out == {"signal": "approved", "key": "ticket-42", "payload": {"by": "ops"}, "timed_out": False}
    effects = ledger.effects(world.ledger_dir)
    assert [len(effects[(str(r.run_id), s, None)]) for s in ("a", "b")] == [1, 1]
    # The first step's effect came before the signal was taken: it was buffered, not lost.
    # A signal for the finished run is dead, with the reason, in the region that answers for it.
    world.ok("--region", "eu-west", "signal", tenant, str(r.run_id), "approved", "--key", "late")
    dead = wait_until(lambda: world.rows("us-east", "SELECT state, reason FROM run_signals WHERE run_id = :r AND key = 'late'"
                                         " AND state = 'dead'", r=r.run_id), 30, "the late signal to be dead")
    assert "succeeded before the signal was taken" in dead[0][1]
    # A wait with nobody signalling ends in its timeout outcome, which the workflow can branch on.
    quiet = submit(tenant, "t_wait", {"signal": "never", "timeout_s": 2}, f"k-{uuid.uuid4()}", region="ap-south",
                   config=world.config, resolve_home=False)
    wait_until(lambda: world.status("us-east", quiet.run_id) == "succeeded", 60, "the timed-out wait")
    out = world.rows("us-east", "SELECT output FROM workflow_steps WHERE run_id = :r AND step_key = 'w'",
                     r=quiet.run_id)[0][0]
    assert out["timed_out"] is True


def test_a_sleeping_run_holds_no_message_and_wakes_once_after_its_workers_are_killed(world: World) -> None:
    region = "ap-south"
    tenant = world.tenant(region, "nap")
    r = submit(tenant, "t_wait", {"sleep_s": 12}, f"k-{uuid.uuid4()}", region=region, config=world.config,
               resolve_home=False)
    parked = wait_until(lambda: world.rows(region, """SELECT t.id, t.wake_at FROM step_tasks t
                                                        WHERE t.run_id = :r AND t.step_key = 'nap' AND t.status = 'queued'
                                                          AND t.wake_at IS NOT NULL""", r=r.run_id), 30, "the step to park")
    task_id, wake_at = parked[0]
    broker = redis.Redis.from_url(world.config.regions[region].broker_url)
    assert not broker.hget(STEP_MESSAGES_KEY, str(task_id)), "a sleeping step holds a broker message"
    for w in world.dev.workers(region):
        world.dev.stop_worker(region, w.name, kill=True)
    world.start_workers(region)
    wait_until(lambda: world.status(region, r.run_id) == "succeeded", 60, "the sleeper to wake and finish")
    effects = ledger.effects(world.ledger_dir)
    b = effects[(str(r.run_id), "b", None)]
    assert len(b) == 1 and b[0]["region"] == region
    woke = world.rows(region, "SELECT finished_at FROM step_tasks WHERE id = :t", t=task_id)[0][0]
    assert woke >= wake_at  # by the owner's database clock
    print(f"sleeper woke {(woke - wake_at).total_seconds():.2f}s after its wake time")


def test_ticks_missed_while_a_regions_workers_were_down_follow_catch_up_latest(world: World) -> None:
    region = "ap-south"
    tenant = world.tenant(region, "down")
    world.ok("--region", region, "schedules", "add", tenant, "every2", "--every", "2s", "--workflow", "t_tick")

    def fired() -> list[datetime]:
        keys = [r[0] for r in world.rows(region, "SELECT idempotency_key FROM workflow_runs WHERE tenant_id = :t",
                                         t=tenant)]
        return sorted(datetime.strptime(k.split(":", 2)[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for k in keys)

    wait_until(lambda: len(fired()) >= 2, 30, "two ticks")
    for w in world.dev.workers(region):
        world.dev.stop_worker(region, w.name, kill=True)
    down_from = world.rows(region, "SELECT clock_timestamp()")[0][0]
    wait_until(lambda: world.rows(region, "SELECT clock_timestamp()")[0][0] > down_from + timedelta(seconds=10), 30,
               "ten seconds of the region's clock without its workers")
    world.start_workers(region)
    before = len(fired())
    wait_until(lambda: len(fired()) >= before + 2, 40, "ticks after the restart")
    world.ok("--region", region, "schedules", "pause", tenant, "every2")
    ticks = fired()
    gaps = [(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)]
    # The ticks that fell while nothing could fire them were skipped but for the newest: one gap of
    # several intervals, every other step one interval (2 s).
    assert max(gaps) >= 8 and sorted(gaps)[-2] == 2, gaps
    assert len(set(ticks)) == len(ticks)


def test_erasing_a_tenant_removes_its_schedules_and_signals(world: World) -> None:
    tenant = world.tenant("ap-south", "gone")
    world.ok("--region", "us-east", "schedules", "add", tenant, "nightly", "--cron", "0 2 * * *", "--tz", "Europe/Berlin",
             "--workflow", "t_tick")
    world.ok("--region", "us-east", "signal", tenant, str(run_id_for(tenant, "later")), "approved", "--key", "k1")
    for region in ("us-east", "ap-south"):
        wait_until(lambda r=region: world.rows(r, "SELECT 1 FROM schedules WHERE tenant_id = :t", t=tenant)
                   and world.rows(r, "SELECT 1 FROM run_signals WHERE tenant_id = :t", t=tenant), 30, "replication")
    world.ok("--region", "us-east", "tenants", "erase", tenant, "--yes")
    for region in REGIONS:
        wait_until(lambda r=region: not world.rows(r, """SELECT 1 FROM schedules WHERE tenant_id = :t
                                                         UNION ALL SELECT 1 FROM schedule_ticks WHERE tenant_id = :t
                                                         UNION ALL SELECT 1 FROM run_signals WHERE tenant_id = :t""",
                                                  t=tenant), 60, f"the tenant's rows gone from {region}")
    # The new tables replicate like the others: every region holds the same rows (payload tables per zone).
    wait_until(lambda: verify(world.config, timeout=30).identical, 90, "verify to report 0 differences")


def test_a_zoned_tenants_schedule_and_signals_stay_in_its_zone(world: World) -> None:
    zone, outside = ["us-east", "ap-south"], "eu-west"
    world.ok("--region", "us-east", "zones", "set", "z1", *zone)
    tenant = world.tenant("ap-south", "zoned")
    wait_until(lambda: world.cli("--region", "ap-south", "tenants", "zone", tenant, "z1").returncode == 0, 30,
               "the binding to zone z1")
    # Asked through a region outside the zone, the schedule is written inside it.
    world.ok("--region", outside, "schedules", "add", tenant, "zs", "--every", "2s", "--workflow", "t_tick",
             "--input", '{"secret": 1}')
    wait_until(lambda: len(world.rows("ap-south", "SELECT 1 FROM workflow_runs WHERE tenant_id = :t", t=tenant)) >= 2,
               40, "two ticks of the zoned schedule")
    world.ok("--region", "us-east", "schedules", "pause", tenant, "zs")
    # A signal published on the outside region's own broker is passed into the zone by its worker.
    target = run_id_for(tenant, "later")
    queue = submit_queue(outside)
    publisher(world.config.regions[outside].broker_url, world.config.settings).send_task(
        SIGNAL_TASK, kwargs={"v": 1, "tenant_id": tenant, "run_id": str(target), "name": "approved",
                             "payload": {"secret": 2}, "key": "k1"}, queue=queue, routing_key=queue)
    wait_until(lambda: world.rows("us-east", "SELECT 1 FROM run_signals WHERE tenant_id = :t", t=tenant), 30,
               "the signal inside the zone")
    # Outside: the tick state and the runs' metadata, never an input or a payload.
    assert world.rows(outside, "SELECT count(*) FROM schedules WHERE tenant_id = :t", t=tenant)[0][0] == 0
    assert world.rows(outside, "SELECT count(*) FROM run_signals WHERE tenant_id = :t", t=tenant)[0][0] == 0
    assert world.rows(outside, "SELECT count(*) FROM workflow_runs WHERE tenant_id = :t", t=tenant)[0][0] == 0
    wait_until(lambda: world.rows(outside, "SELECT 1 FROM schedule_ticks WHERE tenant_id = :t", t=tenant), 30,
               "the tick state everywhere")
    assert world.rows("ap-south", "SELECT zone FROM schedules WHERE tenant_id = :t", t=tenant) == [("z1",)]
    result = wait_until(lambda: (v := verify(world.config, timeout=30)).identical and v, 90, "verify")
    assert not result.outside_zone


def test_a_5s_schedule_fires_once_per_tick_across_a_kill_and_failover_of_the_home_and_a_move(world: World) -> None:
    victim, heir = "eu-west", "us-east"
    tenant = world.tenant(victim, "tick")
    world.ok("--region", "ap-south", "schedules", "add", tenant, "pulse", "--every", "5s", "--workflow", "t_tick",
             "--catch-up", "all", "--overlap", "allow")
    # A run of the victim's tenant sleeping across the failover: the heir wakes it.
    sleeper = submit(tenant, "t_wait", {"sleep_s": 20}, f"k-{uuid.uuid4()}", region="ap-south", config=world.config,
                     resolve_home=False)
    wait_until(lambda: world.rows("ap-south", "SELECT 1 FROM step_tasks WHERE run_id = :r AND step_key = 'nap' AND "
                                              "wake_at IS NOT NULL", r=sleeper.run_id), 30, "the sleeper to park")

    def tick_runs(region: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in world.rows(region, """SELECT idempotency_key, owner_region FROM workflow_runs
                                                             WHERE tenant_id = :t AND idempotency_key LIKE 'rm-schedule:%'""",
                                                 t=tenant)]

    wait_until(lambda: len(tick_runs("ap-south")) >= 3, 40, "three ticks fired by the home")
    world.dev.kill_region(victim)
    killed_at = datetime.now(UTC)
    world.ok("failover", victim, "--to", heir)
    wait_until(lambda: sum(o == heir for _, o in tick_runs(heir)) >= 3, 60, "three ticks fired by the heir")
    # Then a move: the new home fires the next ticks, and no tick is lost or doubled in the hand-over.
    world.ok("--region", heir, "tenants", "move", tenant, "--to", "ap-south")
    wait_until(lambda: sum(o == "ap-south" for _, o in tick_runs(heir)) >= 3, 60, "three ticks fired after the move")
    world.ok("--region", heir, "schedules", "pause", tenant, "pulse")
    # Every tick from the first to the last fired is one run (catch-up all: none missing through the
    # kill), and each ran its step: the ledger holds one execution per tick, beyond crash re-runs in two regions.
    wait_until(lambda: all(world.status(heir, run_id_for(tenant, k)) == "succeeded" for k, _ in tick_runs(heir)),
               60, "every tick's run to finish")
    keys = sorted(k for k, _ in tick_runs(heir))
    ticks = [datetime.strptime(k.split(":", 2)[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for k in keys]
    spec = Spec(every_s=5)
    want = [ticks[0]]
    while want[-1] < ticks[-1]:
        want.append(spec.next_ticks(want[-1], 1)[0])
    assert ticks == want, "a tick is missing or extra"
    effects = ledger.effects(world.ledger_dir)
    runs_in_ledger = {run for (run, step, _), es in effects.items() if step == "a" and
                      run in {str(run_id_for(tenant, k)) for k in keys}}
    assert runs_in_ledger == {str(run_id_for(tenant, k)) for k in keys}
    reruns = {run: [e["region"] for e in effects[(run, "a", None)]] for run in runs_in_ledger
              if len(effects[(run, "a", None)]) > 1}
    assert all(regions == [victim, heir] for regions in reruns.values()), reruns
    fired_in = {o for _, o in tick_runs(heir)}
    assert fired_in == {victim, heir, "ap-south"}
    assert max(ticks) > killed_at + timedelta(seconds=5)
    # The sleeper woke once, in the heir.
    wait_until(lambda: world.status(heir, sleeper.run_id) == "succeeded", 60, "the sleeper to wake in the heir")
    assert [e["region"] for e in ledger.effects(world.ledger_dir)[(str(sleeper.run_id), "b", None)]] == [heir]
    state = json.loads(world.ok("--region", "ap-south", "schedules", "show", tenant, "pulse", "--json"))
    assert state["paused"] is True and state["fired_region"] == "ap-south"
    print(f"schedule: {len(ticks)} ticks, fired in {sorted(fired_in)}, {len(reruns)} crash re-run(s)")
