"""Clock skew: one region's PostgreSQL and workers run 30 s ahead, another's 30 s behind (Debian's
libfaketime preloaded into both), the third on time. Nothing compares two machines' clocks, so
leases are held, deadlines do not fire early, failover waits the right time, restore behaves, and
every step takes effect once (external ledger). Then a database clock that steps 120 s forward
mid-step, and a lease gap shorter than a step's deadline (the keeper stopped): neither runs a step
twice."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import lease as lease_repo
from regionmesh.models.engine import make_engine
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import failover, lease_status, restore
from regionmesh.replication.verify import verify
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing import ledger
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ["us-east", "eu-west", "ap-south"]
SKEW = {"us-east": "+30s", "ap-south": "-30s"}  # eu-west keeps the host's time
REPO_ROOT = str(Path(__file__).resolve().parents[2])
LEASE_S = 4.0


def libfaketime() -> str:
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert found, "libfaketime is missing: apt-get install faketime (.ci/run installs it)"
    return found[0]


def skewed(region: str) -> dict[str, str]:
    if region not in SKEW:
        return {}
    # Wall clocks are skewed; the monotonic clock is left alone (its offset means nothing, and a
    # faked one breaks Python's timed waits under libfaketime).
    return {"LD_PRELOAD": libfaketime(), "FAKETIME": SKEW[region], "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


class World:
    def __init__(self, dev: DevMesh, ledger_dir: Path, env: dict[str, str]) -> None:
        self.dev = dev
        self.ledger_dir = ledger_dir
        self.env = env
        self.config: MeshConfig = load_config(str(dev.mesh_file))
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r)
                                           for r in REGIONS}

    def restart_pg_skewed(self, region: str, *, running: bool = True, env: dict[str, str] | None = None) -> None:
        """(Re)start ``region``'s PostgreSQL with its clock skewed (pg_ctl passes our environment on;
        Redis, started by the same call, must not get libfaketime: it starts it unskewed first).
        ``env``: libfaketime's settings instead of the region's fixed skew."""
        if not running:
            self.dev.up()
        self.dev.stop_pg(region)
        saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "FAKETIME", "FAKETIME_NO_CACHE",
                                                "FAKETIME_DONT_FAKE_MONOTONIC", "FAKETIME_TIMESTAMP_FILE")}
        os.environ.update(skewed(region) if env is None else env)
        try:
            self.dev.up()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.engines[region].dispose()

    def start_worker(self, region: str) -> None:
        self.dev.start_worker(region, extra_env=self.env | skewed(region))

    def db_clock(self, region: str) -> float:
        with self.engines[region].connect() as conn:
            return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())

    def all_succeeded(self, region: str, ids: list[uuid.UUID]) -> bool:
        with self.engines[region].connect() as conn:
            got = conn.execute(text("SELECT status FROM workflow_runs WHERE id = ANY(:i)"), {"i": ids}).scalars().all()
        return len(got) == len(ids) and set(got) == {"succeeded"}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-skew-")
    ledger_dir = root / "ledger"
    ledger_dir.mkdir()
    os.chmod(ledger_dir, 0o777)
    env = {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows", "PYTHONPATH": REPO_ROOT,
           "RM_TEST_LEDGER": str(ledger_dir), "REGIONMESH_RECONCILE_INTERVAL_S": "0.3",
           "REGIONMESH_LEASE_S": str(LEASE_S), "REGIONMESH_REQUEUE_AFTER_S": "3", "REGIONMESH_DEADLINE_SLACK_S": "0.5"}
    dev = DevMesh(root)
    try:
        dev.up(REGIONS)
        w = World(dev, ledger_dir, env)
        for region in SKEW:
            w.restart_pg_skewed(region)
        for region in REGIONS:
            w.start_worker(region)
        yield w
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_skewed_regions_hold_leases_and_run_every_step_once(world: World) -> None:
    now = time.time()
    assert world.db_clock("us-east") - now > 25 and now - world.db_clock("ap-south") > 25, "the skew took effect"
    assert abs(world.db_clock("eu-west") - now) < 5
    wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region to hold its lease")
    ids = []
    for region in REGIONS:
        tenants = [t for i in range(5000) if home_by_hash(t := f"skew-{region}-{i}", REGIONS) == region][:3]
        for t in tenants:
            # Steps of 1.5 s with a 60 s timeout: a deadline read against a skewed clock would fire early.
            ids.append(submit(t, "t_ledger", {"sleep": {"a": 1.5, "b": 0.2, "c": 0.2, "d": 0.2}}, f"k-{uuid.uuid4()}",
                              region="eu-west", config=world.config, resolve_home=False).run_id)
    for region in REGIONS:
        wait_until(lambda r=region: world.all_succeeded(r, ids), 120, f"every run, seen from {region}")
    effects = {k: es for k, es in ledger.effects(world.ledger_dir).items() if uuid.UUID(k[0]) in set(ids)}
    assert len(effects) == 4 * len(ids)
    assert all(len(es) == 1 for es in effects.values()), [es for es in effects.values() if len(es) > 1]
    homes = {e["region"] for es in effects.values() for e in es}
    assert homes == set(REGIONS)  # the skewed regions executed their own tenants
    wait_until(lambda: verify(world.config, timeout=30).identical, 90, "verify to report 0 differences")


def test_failover_of_a_region_ahead_waits_its_lease_and_restore_brings_it_back(world: World) -> None:
    victim, heir = "us-east", "ap-south"  # +30 s failed over to -30 s, judged from the on-time region too
    world.dev.kill_region(victim)
    killed = time.monotonic()
    report = failover(world.config, victim, heir, timeout_s=60)
    assert time.monotonic() - killed >= LEASE_S  # never before the peers' promises ran out
    assert report.waited_s < 3 * (LEASE_S * 1.01 + 1) + 5
    tenant = next(t for i in range(5000) if home_by_hash(t := f"skew-fo-{i}", REGIONS) == victim)
    run = submit(tenant, "t_ledger", {"sleep": {}}, f"k-{uuid.uuid4()}", region="eu-west", config=world.config,
                 resolve_home=False).run_id
    wait_until(lambda: world.all_succeeded(heir, [run]), 60, "the victim's tenant running in the heir")
    # Bring it back skewed as before; it catches up and holds no lease until restored.
    world.restart_pg_skewed(victim, running=False)
    world.start_worker(victim)
    wait_until(lambda: world.all_succeeded(victim, [run]), 60, "the victim to catch up")
    wait_until(lambda: (r := restore(world.config, victim, timeout_s=10)) is not None and r, 90, "restore")
    wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region leased again")
    again = submit(tenant, "t_ledger", {"sleep": {}}, f"k-{uuid.uuid4()}", region="eu-west", config=world.config,
                   resolve_home=False).run_id
    wait_until(lambda: world.all_succeeded(victim, [again]), 60, "new runs of its tenant at home again")
    wait_until(lambda: verify(world.config, timeout=30).identical, 90, "verify to report 0 differences")


def test_a_forward_step_of_a_database_clock_reruns_no_running_step(world: World) -> None:
    """eu-west's PostgreSQL clock steps 120 s forward while a step runs (an NTP step, a resumed VM):
    every deadline written before the step now reads as long past, and the lease's end, kept in
    that clock, as over. Neither may run the step again: the reconciler confirms a deadline on its
    own monotonic clock, and a completion refused for want of the lease waits for it."""
    region = "eu-west"
    clock = world.dev.root / "eu-west.faketime"
    clock.write_text("+0\n")
    os.chmod(clock, 0o644)
    world.restart_pg_skewed(region, env={"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(clock),
                                         "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    try:
        assert abs(world.db_clock(region) - time.time()) < 5
        wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region to hold its lease")
        tenant = next(t for i in range(5000) if home_by_hash(t := f"jump-{i}", REGIONS) == region)
        run = submit(tenant, "t_ledger", {"sleep": {"a": 8.0}}, f"k-{uuid.uuid4()}", region=region,
                     config=world.config, resolve_home=False).run_id
        started = lambda: [e for e in ledger.read(world.ledger_dir) if e["run"] == str(run) and e["phase"] == "start"]  # noqa: E731
        wait_until(lambda: len(started()) == 1, 30, "step a to start")
        clock.write_text("+120\n")
        assert world.db_clock(region) - time.time() > 100, "the step took effect"
        wait_until(lambda: world.all_succeeded(region, [run]), 90, "the run to finish")
    finally:
        # Back on the host's clock by a restart, not by stepping it back: a backward step would
        # lengthen the lease end kept in database time until the next keeper pass (docs/explanation/limits.md).
        world.restart_pg_skewed(region, env={})
    effects = {k: es for k, es in ledger.effects(world.ledger_dir).items() if k[0] == str(run)}
    assert sorted(k[1] for k in effects) == ["a", "b", "c", "d"]
    assert all(len(es) == 1 for es in effects.values()), effects
    assert len(started()) == 4, started()  # no step was started a second time


def test_a_step_that_ends_while_its_region_holds_no_lease_completes_once_the_lease_is_back(world: World) -> None:
    """A lease gap shorter than the step's deadline: the worker's main process (its lease keeper)
    is stopped (SIGSTOP, as a starved or paused process would be) while a pool process runs a step,
    so the lease runs out before the step ends. The completion is refused while the gap lasts; the
    pool process waits for the lease instead of leaving the task to run again after its deadline.
    In ap-south, whose clock runs 30 s behind throughout."""
    region = "ap-south"
    wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region to hold its lease")
    tenant = next(t for i in range(5000) if home_by_hash(t := f"gap-{i}", REGIONS) == region)
    run = submit(tenant, "t_ledger", {"sleep": {"a": 2 * LEASE_S}}, f"k-{uuid.uuid4()}", region=region,
                 config=world.config, resolve_home=False).run_id

    def phases(phase: str) -> list[dict[str, object]]:
        return [e for e in ledger.read(world.ledger_dir) if e["run"] == str(run) and e["phase"] == phase]

    def task_a() -> str:
        with world.engines[region].connect() as conn:
            return str(conn.execute(text("SELECT status FROM step_tasks WHERE run_id = :r AND step_key = 'a'"),
                                    {"r": run}).scalar_one())

    wait_until(lambda: len(phases("start")) == 1, 30, "step a to start")
    main = world.dev.workers(region)[0].pid
    os.kill(main, signal.SIGSTOP)
    try:
        wait_until(lambda: not lease_repo.lease_row(world.engines[region])["may_work"], 3 * LEASE_S,
                   "eu-west's lease to run out with its keeper stopped")
        wait_until(lambda: len(phases("effect")) == 1, 30, "step a's effect, its completion refused")
        assert task_a() == "running"  # refused: the worker holds it, nothing completed it
    finally:
        os.kill(main, signal.SIGCONT)
    wait_until(lambda: world.all_succeeded(region, [run]), 60, "the run to finish once the lease is back")
    effects = {k: es for k, es in ledger.effects(world.ledger_dir).items() if k[0] == str(run)}
    assert sorted(k[1] for k in effects) == ["a", "b", "c", "d"] and all(len(es) == 1 for es in effects.values())
    assert len(phases("start")) == 4
