"""Partition safety on a three-region mesh of its own: real PostgreSQL logical replication cut by TCP
proxies, real Redis and celery workers in every region, and an external effect ledger (a file per
region, written by the step handlers, read by regionmesh/testing/ledger.py) as the history to check.

The promise attacked: at most one region executes a tenant's runs at any moment. A region cut off
from the majority stops within its lease; the majority fails it over only once its lease expired;
runs created or steps completed on the cut side before that are the documented partition window
(at-least-once, like a crash) and nothing after it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import lease as lease_repo
from regionmesh.models import subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import failover, lease_status, set_intent
from regionmesh.replication.setup import conninfo, setup
from regionmesh.replication.verify import verify
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing import ledger
from regionmesh.testing.proxy import Proxy
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ["us-east", "eu-west", "ap-south"]
REPO_ROOT = str(Path(__file__).resolve().parents[2])
LEASE_S, DRIFT, MARGIN_S = 4.0, 0.01, 1.0


class World:
    def __init__(self, dev: DevMesh, ledger_dir: Path) -> None:
        self.dev = dev
        self.ledger_dir = ledger_dir
        self.config: MeshConfig = load_config(str(dev.mesh_file))
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r)
                                           for r in REGIONS}
        self.proxies: dict[tuple[str, str], Proxy] = {}  # (subscriber, publisher) -> proxy

    def tenants(self, home: str, n: int, prefix: str) -> list[str]:
        out = [t for i in range(20_000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) == home]
        return out[:n]

    def submit(self, tenant: str, key: str, via: str, sleep: float = 0.3) -> uuid.UUID:
        data = {"sleep": {s: sleep for s in "abcd"}}
        return submit(tenant, "t_ledger", data, key, region=via, config=self.config, resolve_home=False).run_id

    def route_through_proxies(self, region: str) -> None:
        """Every link to and from ``region`` goes through a proxy the test can sever."""
        for sub in REGIONS:
            for pub in REGIONS:
                if sub == pub or region not in (sub, pub):
                    continue
                port = int(self.config.regions[pub].peer_conninfo.split("port=")[1].split()[0])
                proxy = self.proxies[(sub, pub)] = Proxy(port)
                info = conninfo(self.config, pub, sub).replace(f"port={port}", f"port={proxy.port}")
                subscribing.set_subscription_connection(self.engines[sub], subscription_name(sub, pub), info)

    def sever(self, *links: tuple[str, str]) -> None:
        for link in links:
            self.proxies[link].sever()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def lease(self, region: str) -> dict[str, Any]:
        return lease_repo.lease_row(self.engines[region])

    def statuses(self, region: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str, int]]:
        with self.engines[region].connect() as conn:
            return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(text(
                "SELECT id, status, owner_region, epoch FROM workflow_runs WHERE id = ANY(:i)"), {"i": ids})}

    def all_succeeded(self, region: str, ids: list[uuid.UUID]) -> bool:
        got = self.statuses(region, ids)
        return len(got) == len(set(ids)) and all(s == "succeeded" for s, _, _ in got.values())


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-partition-")
    ledger_dir = root / "ledger"
    ledger_dir.mkdir()
    os.chmod(ledger_dir, 0o777)
    env = {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows", "PYTHONPATH": REPO_ROOT,
           "RM_TEST_LEDGER": str(ledger_dir), "REGIONMESH_RECONCILE_INTERVAL_S": "0.3",
           "REGIONMESH_LEASE_S": str(LEASE_S), "REGIONMESH_CLOCK_DRIFT": str(DRIFT),
           "REGIONMESH_LEASE_MARGIN_S": str(MARGIN_S), "REGIONMESH_FORWARD_CONFIRM_S": "5"}
    dev = DevMesh(root)
    try:
        dev.up(REGIONS, workers=1, worker_env=env)
        w = World(dev, ledger_dir)
        wait_until(lambda: all(s.held for s in lease_status(w.config)), 60, "every region to hold its lease")
        yield w
    finally:
        for proxy in list(locals().get("w", World.__new__(World)).__dict__.get("proxies", {}).values()):
            proxy.close()
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_a_cut_off_region_stops_within_its_lease_and_is_failed_over_only_after(world: World) -> None:
    victim, heir, third = "eu-west", "us-east", "ap-south"
    tenants = world.tenants(victim, 4, "part")
    world.route_through_proxies(victim)
    wait_until(lambda: world.lease(victim)["may_work"], 30, "the victim's lease through the proxies")
    keys = {t: f"k-{uuid.uuid4()}" for t in tenants}
    # Long steps in flight at the victim when it is cut off.
    first = [world.submit(t, keys[t], victim, sleep=1.0) for t in tenants]
    wait_until(lambda: len(ledger.read(world.ledger_dir)) > 0, 30, "steps running in the victim")
    cut_at = time.time()
    world.sever(*[link for link in world.proxies])
    # The same keys submitted on both sides while cut: the victim's own broker and the heir's.
    again_victim = [world.submit(t, keys[t], victim) for t in tenants]
    again_heir = [world.submit(t, keys[t], heir) for t in tenants]
    assert again_victim == again_heir == first  # one run id per (tenant, key), computed by anyone

    # The cut-off side stops by itself within its lease (plus a keeper pass).
    wait_until(lambda: not world.lease(victim)["may_work"], LEASE_S + 3, "the victim to lose its lease")
    lost_at = time.time()
    assert lost_at - cut_at <= LEASE_S + 3
    # The majority side keeps its leases.
    assert world.lease(heir)["may_work"] and world.lease(third)["may_work"]

    report = failover(world.config, victim, heir, even_if_reachable=True, timeout_s=60)
    promise = LEASE_S * (1 + DRIFT) + MARGIN_S
    assert report.waited_s >= 0 and time.time() - cut_at >= promise  # not before every promise ran out
    wait_until(lambda: world.all_succeeded(heir, first), 90, "the heir to finish the victim's runs")
    with world.engines[heir].connect() as conn:
        epochs = set(conn.execute(text("SELECT epoch FROM workflow_runs WHERE id = ANY(:i)"), {"i": first}).scalars())
    assert min(epochs) >= 2, "runs created or adopted by the heir carry a newer epoch"

    # No step starts in the victim once its lease is gone; what it started before is the window
    # (a step claimed under the lease may finish its side effect after it, like a crash mid-step).
    entries = ledger.read(world.ledger_dir)
    late = [e for e in entries if e["region"] == victim and e["phase"] == "start" and e["t"] > lost_at + 0.5]
    assert late == [], late
    started = {(e["run"], e["step"], e["idx"]): e["t"] for e in entries if e["region"] == victim and e["phase"] == "start"}
    effects = ledger.effects(world.ledger_dir)
    twice = {k: es for k, es in effects.items() if len({e["region"] for e in es}) > 1}
    window = {k for k in twice if started.get(k, float("inf")) <= lost_at + 0.5}
    assert set(twice) == window, "a step ran in two regions outside the victim's lease window"
    # Within one region, each (run, step, index) took effect once (no crash there).
    assert all(len([e for e in es if e["region"] == heir]) <= 1 for es in effects.values())

    # Heal: the victim catches up, learns it was failed over, holds no lease, and the mesh converges.
    world.heal()
    wait_until(lambda: world.all_succeeded(victim, first), 90, "the victim to apply the heir's results")
    assert not world.lease(victim)["may_work"]
    wait_until(lambda: "failed_over" in (world.lease(victim)["reason"] or ""), 15,
               "the victim's keeper to see that it was failed over")
    wait_until(lambda: verify(world.config, timeout=30).identical, 90, "verify to report 0 differences")
    for region in REGIONS:
        got = world.statuses(region, first)
        assert {s for s, _, _ in got.values()} == {"succeeded"} and len(got) == len(first)
        assert {owner for _, owner, _ in got.values()} == {heir}
    print(f"partition: lease lost {lost_at - cut_at:.1f}s after the cut, failover waited {report.waited_s:.1f}s, "
          f"{len(window)} step(s) in the victim's lease window ran again in the heir")


def test_asymmetric_partitions_stop_the_region_that_cannot_hear_a_majority(world: World) -> None:
    # (runs after the failover test: restore the failed region first if it is not active)
    from regionmesh.ops.failover import restore

    rows = lease_status(world.config)
    for r in rows:
        if r.status != "active":
            world.heal()
            restore(world.config, r.region, timeout_s=60)
    wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region leased again")
    a = "ap-south"
    world.route_through_proxies(a)
    wait_until(lambda: world.lease(a)["may_work"], 30, f"{a}'s lease through the proxies")
    # A hears the others, the others do not hear A: its beats reach no one, its grants age out.
    world.sever(("us-east", a), ("eu-west", a))
    wait_until(lambda: not world.lease(a)["may_work"], LEASE_S + 3, f"{a} to lose its lease (unheard)")
    assert world.lease("us-east")["may_work"] and world.lease("eu-west")["may_work"]
    world.heal()
    wait_until(lambda: world.lease(a)["may_work"], 30, f"{a} to hold its lease again")
    # The others hear A, A does not hear them: their grants never reach it.
    world.sever((a, "us-east"), (a, "eu-west"))
    wait_until(lambda: not world.lease(a)["may_work"], LEASE_S + 3, f"{a} to lose its lease (deaf)")
    assert world.lease("us-east")["may_work"] and world.lease("eu-west")["may_work"]
    world.heal()
    wait_until(lambda: world.lease(a)["may_work"], 30, f"{a} to hold its lease again")


@pytest.mark.parametrize("change", ["pin", "move"])
def test_a_registry_change_racing_the_same_keys_in_both_regions_runs_each_once(world: World, change: str) -> None:
    """The same keys sent to the old and the new home while the tenant is pinned or moved, with the
    new home deaf to the old one for a while (the row that moves the tenant reaches it only on heal):
    a window in which the two regions disagree about the home, made certain."""
    from regionmesh.ops.failover import restore

    world.heal()
    for r in lease_status(world.config):
        if r.status != "active":
            restore(world.config, r.region, timeout_s=60)
    old, new = "us-east", "ap-south"
    if (new, old) not in world.proxies:
        world.route_through_proxies(new)
    wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region leased")
    tenant = world.tenants(old, 1, f"race-{change}")[0]
    ids: list[uuid.UUID] = []
    for i in range(30):
        key = f"race-{change}-{i}"
        ids.append(world.submit(tenant, key, old, sleep=0.05))
        world.submit(tenant, key, new, sleep=0.05)
        if i == 10:
            world.sever((new, old))  # ap-south stops hearing us-east (it still holds its lease)
            set_intent(world.config, tenant, new, change, "race test", old)
        if i == 20:
            world.heal()
    wait_until(lambda: world.all_succeeded(new, ids) and world.all_succeeded(old, ids), 120, "every raced run")
    owners = {owner for _, owner, _ in world.statuses(new, ids).values()}
    assert owners == {old, new}, owners  # both placed some, before and after the pin
    effects = ledger.effects(world.ledger_dir)
    raced = {k: es for k, es in effects.items() if uuid.UUID(k[0]) in set(ids)}
    assert len(raced) == 4 * len(ids)
    assert all(len(es) == 1 for es in raced.values()), [es for es in raced.values() if len(es) > 1]


def test_forged_hops_never_start_a_run_off_its_home(world: World) -> None:
    from regionmesh.broker import publisher
    from regionmesh.names import SUBMIT_TASK, submit_queue

    home, other = "us-east", "eu-west"
    tenant = world.tenants(home, 1, "hops")[0]
    sid = str(uuid.uuid4())
    kwargs = {"v": 1, "tenant_id": tenant, "workflow": "t_ledger", "input": {"sleep": {}}, "idempotency_key": sid,
              "submission_id": sid, "hops": 99}
    publisher(world.config.regions[other].broker_url, world.config.settings).send_task(
        SUBMIT_TASK, kwargs=kwargs, queue=submit_queue(other), task_id=sid)
    from regionmesh.workers.submission import run_id_for

    run_id = run_id_for(tenant, sid)
    # Held in the outbox, sent on to the home, and run there, never in the region that received it.
    wait_until(lambda: world.all_succeeded(home, [run_id]), 60, "the run at its home")
    assert {owner for _, owner, _ in world.statuses(home, [run_id]).values()} == {home}
    effects = [e for es in ledger.effects(world.ledger_dir).values() for e in es if e["run"] == str(run_id)]
    assert {e["region"] for e in effects} == {home}


def test_failover_is_refused_while_the_region_answers_and_nothing_changes(world: World) -> None:
    from regionmesh.ops.failover import FailoverRefused, restore

    for r in lease_status(world.config):
        if r.status != "active":
            world.heal()
            restore(world.config, r.region, timeout_s=60)
    with pytest.raises(FailoverRefused, match="still answers"):
        failover(world.config, "ap-south", "us-east", timeout_s=5)
    assert {r.region: r.status for r in lease_status(world.config)} == dict.fromkeys(REGIONS, "active")


def test_a_manual_fence_holds_until_unfenced(world: World) -> None:
    from regionmesh.ops.failover import fence, restore, unfence

    for r in lease_status(world.config):
        if r.status != "active":
            world.heal()
            restore(world.config, r.region, timeout_s=60)
    region = "eu-west"
    wait_until(lambda: world.lease(region)["may_work"], 30, f"{region}'s lease")
    assert fence(world.config, region, "disk replacement")
    assert not world.lease(region)["may_work"]  # at once: rm_may_work reads the fence
    tenant = world.tenants(region, 1, "fence")[0]
    run = world.submit(tenant, f"k-{uuid.uuid4()}", region)

    def beat() -> int:
        with world.engines[region].connect() as conn:
            return int(conn.execute(text("SELECT seq FROM heartbeats WHERE region = :r"), {"r": region}).scalar_one())

    start = beat()
    wait_until(lambda: beat() >= start + 10, 30, "ten keeper passes")
    # Ten passes of the keeper later the fence is still up and nothing was created.
    assert not world.lease(region)["may_work"]
    assert "operator" in (world.lease(region)["reason"] or "")
    assert world.statuses(region, [run]) == {}
    assert unfence(world.config, region)
    wait_until(lambda: world.all_succeeded(region, [run]), 60, "the held submission to run once unfenced")


def test_setup_restores_direct_links(world: World) -> None:
    world.heal()
    for proxy in world.proxies.values():
        proxy.close()
    world.proxies.clear()
    setup(world.config)
    wait_until(lambda: all(s.held for s in lease_status(world.config)), 60, "every region leased on direct links")
