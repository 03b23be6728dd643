"""A failover adopts only into a heir that holds the victim's committed work that a live peer holds
(issue 21's open question), on a three-region mesh of its own: real PostgreSQL logical replication
cut by TCP proxies, real Redis and a celery worker (with its lease keeper) in every region, and the
external effect ledger (regionmesh/testing/ledger.py) as the history.

The hole: with ``origin = none`` a peer never relays the victim's changes to another peer. The link
victim <-> heir is cut both ways while both still reach the third region, so the victim keeps its
lease (the third region's grant makes a majority) and completes steps whose completions reach the
third region only. Once the victim loses its lease, a failover to the heir used to adopt the runs
from the heir's stale copy and run those completed steps again. Now it is refused, naming the third
region, and a failover to that region adopts from the copy that holds the completions: every step
the victim completed took effect once.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import lease as lease_repo
from regionmesh.models import subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import FailoverRefused, failover, lease_status
from regionmesh.replication.setup import conninfo
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing import ledger
from regionmesh.testing.proxy import Proxy
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

VICTIM, HEIR, HOLDER = "eu-west", "us-east", "ap-south"
REGIONS = [VICTIM, HEIR, HOLDER]
REPO_ROOT = str(Path(__file__).resolve().parents[2])
LEASE_S, DRIFT, MARGIN_S = 4.0, 0.01, 1.0
RUNS = 2


class World:
    def __init__(self, dev: DevMesh, ledger_dir: Path) -> None:
        self.dev = dev
        self.ledger_dir = ledger_dir
        self.config: MeshConfig = load_config(str(dev.mesh_file))
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r)
                                           for r in REGIONS}
        self.proxies: dict[tuple[str, str], Proxy] = {}  # (subscriber, publisher) -> proxy

    def route_every_link_through_a_proxy(self) -> None:
        for sub in REGIONS:
            for pub in REGIONS:
                if sub == pub:
                    continue
                port = int(self.config.regions[pub].peer_conninfo.split("port=")[1].split()[0])
                proxy = self.proxies[(sub, pub)] = Proxy(port)
                info = conninfo(self.config, pub, sub).replace(f"port={port}", f"port={proxy.port}")
                subscribing.set_subscription_connection(self.engines[sub], subscription_name(sub, pub), info)

    def cut(self, a: str, b: str) -> None:
        self.proxies[(a, b)].sever()
        self.proxies[(b, a)].sever()

    def may_work(self, region: str) -> bool:
        return lease_repo.may_work(self.engines[region])

    def tasks(self, region: str, ids: list[uuid.UUID]) -> dict[tuple[str, str], str]:
        """(run, step) -> task status, as ``region``'s copy holds them."""
        with self.engines[region].connect() as conn:
            return {(str(r[0]), r[1]): r[2] for r in conn.execute(text(
                "SELECT run_id, step_key, status FROM step_tasks WHERE run_id = ANY(:i)"), {"i": ids})}

    def runs(self, region: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        with self.engines[region].connect() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(text(
                "SELECT id, status, owner_region FROM workflow_runs WHERE id = ANY(:i)"), {"i": ids})}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-heir-")
    ledger_dir = root / "ledger"
    ledger_dir.mkdir()
    os.chmod(ledger_dir, 0o777)
    env = {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows", "PYTHONPATH": REPO_ROOT,
           "RM_TEST_LEDGER": str(ledger_dir), "REGIONMESH_RECONCILE_INTERVAL_S": "0.3",
           "REGIONMESH_LEASE_S": str(LEASE_S), "REGIONMESH_CLOCK_DRIFT": str(DRIFT),
           "REGIONMESH_LEASE_MARGIN_S": str(MARGIN_S)}
    dev = DevMesh(root)
    proxies: list[Proxy] = []
    try:
        dev.up(REGIONS, workers=1, concurrency=4, worker_env=env)
        w = World(dev, ledger_dir)
        w.route_every_link_through_a_proxy()
        proxies = list(w.proxies.values())
        wait_until(lambda: all(s.held for s in lease_status(w.config)), 90, "every region to hold its lease")
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        for proxy in proxies:
            proxy.close()
        leftover = down_and_leftovers(dev, root, purge=not os.environ.get("RM_KEEP_MESH"))
        if not os.environ.get("RM_KEEP_MESH"):
            shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_a_failover_refuses_a_heir_that_lacks_completions_a_live_peer_holds(world: World) -> None:
    tenants = [t for i in range(20_000) if home_by_hash(t := f"heir-{i}", REGIONS) == VICTIM][:RUNS]
    # a runs long enough for the cut to come while it runs; b and c end under the victim's lease
    # after the cut; d is still running when the victim loses its lease (the lease window).
    data = {"sleep": {"a": 4.0, "b": 0.2, "c": 0.2, "d": 20.0}}
    ids = [submit(t, "t_ledger", data, f"k-{uuid.uuid4()}", region=VICTIM, config=world.config,
                  resolve_home=False).run_id for t in tenants]
    wait_until(lambda: len(world.runs(HEIR, ids)) == RUNS, 30, "the heir to hold the runs")
    world.cut(VICTIM, HEIR)  # the victim and the third region still reach each other: a majority

    def finished_at_holder() -> bool:
        got = world.tasks(HOLDER, ids)
        return all(got.get((str(r), s)) == "succeeded" for r in ids for s in "abc")

    wait_until(finished_at_holder, 60, "the victim's completions of a, b and c at the third region")
    assert world.may_work(VICTIM), "the victim completed them under its lease (granted by the third region)"
    at_heir = world.tasks(HEIR, ids)
    assert all(at_heir.get((str(r), "b")) != "succeeded" for r in ids), "the heir never received them"
    completed = {(str(r), s) for r in ids for s in "abc"}

    world.cut(VICTIM, HOLDER)
    wait_until(lambda: not world.may_work(VICTIM), LEASE_S + 5, "the victim to lose its lease")
    with pytest.raises(FailoverRefused) as refused:
        failover(world.config, VICTIM, HEIR, even_if_reachable=True, timeout_s=60)
    message = str(refused.value)
    assert f"fail over to {HOLDER}, which has applied {VICTIM}'s WAL up to" in message, message
    assert f"{HEIR} only up to" in message
    assert {owner for _, owner in world.runs(HEIR, ids).values()} == {VICTIM}, "the refused heir adopted nothing"
    with world.engines[HEIR].connect() as conn:
        status = conn.execute(text("SELECT status FROM regions WHERE name = :r"), {"r": VICTIM}).scalar()
    assert status == "failing_over", "the victim's tenants wait for the operator's next move"

    report = failover(world.config, VICTIM, HOLDER, even_if_reachable=True, timeout_s=60)
    assert report.runs_adopted == RUNS
    wait_until(lambda: all(s == ("succeeded", HOLDER) for s in world.runs(HOLDER, ids).values()), 90,
               "the new heir to finish the runs")

    effects = ledger.effects(world.ledger_dir)
    mine = {(run, step): es for (run, step, _idx), es in effects.items() if uuid.UUID(run) in set(ids)}
    twice = {k: [(e["region"], e["attempt"], e["epoch"]) for e in es] for k, es in mine.items()
             if k in completed and len(es) != 1}
    assert twice == {}, f"completed steps ran again or never: {twice}"
    assert all(any(e["region"] == HOLDER for e in mine[(str(r), "d")]) for r in ids), "d ran in the new heir"
    assert not any(e["region"] == HEIR for es in mine.values() for e in es), "the refused heir ran nothing"
    print(f"heir: refused {HEIR} ({message[:160]}...); {HOLDER} adopted {report.runs_adopted} run(s) "
          f"after {report.waited_s:.1f}s; {len(completed)} completed step(s) took effect once")
