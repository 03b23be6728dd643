"""A failover counts only expiries that answer it (issue 21, item 4), on a mesh of its own: real
PostgreSQL logical replication cut by TCP proxies, a real celery worker (and its lease keeper) in
every region.

The hole: ``lease_grants`` rows of an earlier failover of the same region stay ``expired`` in the
heir's copy when the grantor's later ``granting`` (after the restore) has not reached the heir.
Sequence: A is failed over to B and restored; C's link to B is cut, so C's grants of the restored A
never reach B; then A is cut off from B's side, and B's own writes stop reaching A's side, which
never hears of the second failover and keeps granting A. A keeps a majority (A, C, and on five
regions D), yet B used to count C's stale expiry with its own (and E's) and adopt A's tenants while
A still held its lease. Now the failover waits until the expiries of *this* episode arrive, which
happens only once the cut heals and A's side has stopped granting.

It runs on three regions (the smallest case, about 40 s) and on five (two regions backing A's
majority, one beside the heir, about 50 s).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from regionmesh.config import MeshConfig, load_config
from regionmesh.models import lease as lease_repo
from regionmesh.models import subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import FailoverRefused, failover, lease_status, restore
from regionmesh.replication.setup import conninfo
from regionmesh.testing.proxy import Proxy
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REPO_ROOT = str(Path(__file__).resolve().parents[2])
LEASE_S, DRIFT, MARGIN_S = 4.0, 0.01, 1.0
PROMISE_S = LEASE_S * (1 + DRIFT) + MARGIN_S


@dataclass(frozen=True)
class Sides:
    """Who is who: ``victim`` is failed over twice to ``heir``; ``stale`` is the grantor whose
    post-restore grants never reach the heir; ``with_victim`` keep granting the victim in the second
    failover (they never hear of it); ``with_heir`` are on the heir's side (they do)."""

    victim: str
    heir: str
    stale: str
    with_victim: tuple[str, ...]
    with_heir: tuple[str, ...]

    @property
    def regions(self) -> list[str]:
        return [self.victim, self.heir, *self.with_victim, *self.with_heir]


THREE = Sides("eu-west", "us-east", "ap-south", ("ap-south",), ())
FIVE = Sides("eu-west", "us-east", "ap-south", ("ap-south", "eu-central"), ("us-west",))


class World:
    def __init__(self, dev: DevMesh, sides: Sides) -> None:
        self.dev = dev
        self.sides = sides
        self.config: MeshConfig = load_config(str(dev.mesh_file))
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r)
                                           for r in sides.regions}
        self.proxies: dict[tuple[str, str], Proxy] = {}  # (subscriber, publisher) -> proxy

    def route_every_link_through_a_proxy(self) -> None:
        for sub in self.sides.regions:
            for pub in self.sides.regions:
                if sub == pub:
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

    def may_work(self, region: str) -> bool:
        return lease_repo.may_work(self.engines[region])

    def grant(self, copy: str, holder: str, grantor: str) -> tuple[str, int] | None:
        """(state, episode) of ``grantor``'s row about ``holder`` as ``copy``'s database holds it."""
        with self.engines[copy].connect() as conn:
            row = conn.execute(text("SELECT state, epoch FROM lease_grants WHERE holder = :h AND grantor = :g"),
                               {"h": holder, "g": grantor}).first()
        return (row[0], int(row[1])) if row else None


@pytest.fixture(scope="module", params=[pytest.param(THREE, id="three-regions"), pytest.param(FIVE, id="five-regions")])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    sides: Sides = request.param
    root = make_mesh_dir("rm-episodes-")
    env = {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples", "PYTHONPATH": REPO_ROOT,
           "REGIONMESH_RECONCILE_INTERVAL_S": "0.3", "REGIONMESH_LEASE_S": str(LEASE_S),
           "REGIONMESH_CLOCK_DRIFT": str(DRIFT), "REGIONMESH_LEASE_MARGIN_S": str(MARGIN_S)}
    dev = DevMesh(root)
    proxies: list[Proxy] = []
    try:
        dev.up(sides.regions, workers=1, concurrency=1, worker_env=env)
        w = World(dev, sides)
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


def first_failover_and_restore(world: World) -> None:
    """Episode 1: the victim, cut off, is failed over to the heir; every grantor's row about it
    ends ``expired``. Then the stale grantor's link to the heir is cut and the victim restored: the
    stale grantor grants it again, in a row the heir never receives."""
    s = world.sides
    victim_links = [link for link in world.proxies if s.victim in link]
    world.sever(*victim_links)
    wait_until(lambda: not world.may_work(s.victim), LEASE_S + 5, "the cut-off victim to lose its lease")
    failover(world.config, s.victim, s.heir, even_if_reachable=True, timeout_s=60)
    for grantor in s.regions[1:]:
        wait_until(lambda g=grantor: (world.grant(s.heir, s.victim, g) or ("", 0))[0] == "expired", 30,
                   f"{grantor}'s expiry of the first failover at the heir")
    world.heal()
    wait_until(lambda: "failed_over" in (lease_repo.lease_row(world.engines[s.victim])["reason"] or ""), 30,
               "the victim to learn that it was failed over")
    world.sever((s.heir, s.stale))
    restore(world.config, s.victim, timeout_s=60)
    wait_until(lambda: (world.grant(s.stale, s.victim, s.stale) or ("", 0))[0] == "granting", 30,
               "the stale grantor to grant the restored victim")
    wait_until(lambda: world.may_work(s.victim), 30, "the restored victim's lease")
    stale_at_heir = world.grant(s.heir, s.victim, s.stale)
    assert stale_at_heir is not None and stale_at_heir[0] == "expired", (
        f"the heir's copy of {s.stale}'s row should still be the first failover's expiry: {stale_at_heir}")


def cut_the_victim_s_majority_off(world: World) -> None:
    """The victim keeps its majority (itself and ``with_victim``), who never hear the heir again;
    the heir's side (``with_heir``) hears the heir but not the victim."""
    s = world.sides
    heir_side = (s.heir, *s.with_heir)
    links = [(a, b) for a in heir_side for b in (s.victim,)] + [(b, a) for a in heir_side for b in (s.victim,)]
    links += [(v, s.heir) for v in s.with_victim]
    world.sever(*links)


def test_a_failover_never_counts_an_expiry_from_an_earlier_failover(world: World) -> None:
    s = world.sides
    first_failover_and_restore(world)
    # The heir must hold a lease to start a failover: take the cut right after it renewed.
    wait_until(lambda: (lease_repo.lease_row(world.engines[s.heir])["remaining_s"] or 0) > LEASE_S - 1.0, 30,
               "a fresh lease at the heir")
    cut_the_victim_s_majority_off(world)
    began = time.monotonic()
    try:
        report = failover(world.config, s.victim, s.heir, even_if_reachable=True, timeout_s=2 * PROMISE_S + 4)
    except FailoverRefused as refused:
        assert "expired for an earlier failover only" in str(refused), refused
        assert s.stale in str(refused).split("earlier failover only:")[1], refused
    else:
        pytest.fail(f"failover adopted {s.victim}'s runs after {report.waited_s:.1f}s while it still held its lease "
                    f"(may_work={world.may_work(s.victim)}, backed by {sorted(s.with_victim)}, which never heard of "
                    f"this failover): {s.stale}'s expiry from the first failover was counted")
    # The refusal is right: the victim held its lease all along, backed by grantors that still grant it.
    assert world.may_work(s.victim), "the victim should still hold its lease (its majority never heard)"
    assert all((world.grant(v, s.victim, v) or ("", 0))[0] == "granting" for v in s.with_victim)
    print(f"episodes: failover refused after {time.monotonic() - began:.1f}s while {s.victim} held its lease")

    # Healed, the victim's side hears of the failover: it withholds, expires, and the victim stops.
    world.heal()
    wait_until(lambda: world.may_work(s.heir), 30, "the heir's lease after the heal")
    report = failover(world.config, s.victim, s.heir, even_if_reachable=True, timeout_s=60)
    assert not world.may_work(s.victim), "a failover completed while the victim still held its lease"
    restore(world.config, s.victim, timeout_s=60)
    wait_until(lambda: all(st.held for st in lease_status(world.config)), 60, "every region leased again")
    print(f"episodes: after the heal the failover waited {report.waited_s:.1f}s and completed")
