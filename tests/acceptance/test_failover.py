"""Region failover and restore with leases and epochs, on a three-region mesh of its own
(real PostgreSQL, Redis and celery workers; the victim is killed with SIGKILL; step handlers write
an external effect ledger, so re-runs are counted from outside the mesh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
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
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.replication.verify import verify
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing import ledger
from regionmesh.testing.workflows import TEST_TABLES
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

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
        self.submitted: dict[uuid.UUID, tuple[str, str]] = {}  # run id -> (tenant, key)

    def tenants(self, home: str, n: int, prefix: str = "fo") -> list[str]:
        out = []
        for i in range(10_000):
            if home_by_hash(t := f"{prefix}-{home}-{i}", REGIONS) == home:
                out.append(t)
            if len(out) == n:
                return out
        raise AssertionError("not enough tenants")

    def submit(self, tenant: str, via: str, workflow: str = "t_ledger", data: dict[str, Any] | None = None) -> uuid.UUID:
        key = f"k-{uuid.uuid4()}"
        r = submit(tenant, workflow, data if data is not None else {"sleep": {"b": 0.2, "c": 0.2}}, key, region=via,
                   config=self.config, resolve_home=False)
        self.submitted[r.run_id] = (tenant, key)
        return r.run_id

    def statuses(self, region: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        with self.engines[region].connect() as conn:
            return {r[0]: r[1] for r in conn.execute(text("SELECT id, status FROM workflow_runs WHERE id = ANY(:i)"), {"i": ids})}

    def all_succeeded(self, region: str, ids: list[uuid.UUID]) -> bool:
        got = self.statuses(region, ids)
        return len(got) == len(ids) and set(got.values()) <= {"succeeded"}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REGIONMESH_CONFIG=str(self.dev.mesh_file))
        return subprocess.run([sys.executable, "-m", "regionmesh.ops.cli", *args], capture_output=True, text=True,
                              env=env, timeout=180, check=False)

    def scalar(self, region: str, sql: str, **params: Any) -> Any:
        with self.engines[region].connect() as conn:
            return conn.execute(text(sql), params).scalar()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-failover-")
    ledger_dir = root / "ledger"
    ledger_dir.mkdir()
    os.chmod(ledger_dir, 0o777)
    dev = DevMesh(root)
    try:
        dev.up(REGIONS, workers=1, worker_env=WORKER_ENV | {"RM_TEST_LEDGER": str(ledger_dir)})
        w = World(dev, ledger_dir)
        for e in w.engines.values():
            with e.begin() as conn:
                conn.execute(text(TEST_TABLES))
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_kill_failover_rejoin_restore(world: World) -> None:
    victim, heir = "eu-west", "us-east"
    mixed = {r: world.tenants(r, 3) for r in REGIONS}
    # A long step homed in the victim, running when it dies.
    long_tenant = world.tenants(victim, 1, "long")[0]
    long_run = world.submit(long_tenant, heir, "t_ledger", {"sleep": {"a": 8}})
    wait_until(lambda: any(e["run"] == str(long_run) and e["region"] == victim and e["phase"] == "start"
                           for e in ledger.read(world.ledger_dir)), 30, "the long step running in the victim")
    # A tenant hashed to ap-south, pinned to the victim: the pin must survive failover and restore.
    pinned = world.tenants("ap-south", 1, "pinned")[0]
    res = world.cli("--region", "ap-south", "tenants", "pin", pinned, victim, "--note", "residency")
    assert res.returncode == 0, res.stdout + res.stderr

    def route(t: str, via: str = "ap-south") -> dict[str, Any]:
        return json.loads(world.cli("--region", via, "route", t, "--json").stdout)

    wait_until(lambda: route(pinned, heir)["home"] == victim, 30, "the pin to replicate to the heir")
    # Producers in the surviving regions (the victim's own producers die with it).
    before = [world.submit(t, via) for via in (heir, "ap-south") for r in REGIONS for t in mixed[r]]
    world.dev.kill_region(victim)
    # Submissions for its tenants made elsewhere wait in the outboxes.
    during = [world.submit(t, via) for via in (heir, "ap-south") for t in mixed[victim]]
    during += [world.submit(t, "ap-south") for t in mixed["ap-south"]]

    def outboxed() -> int:
        out = json.loads(world.cli("outbox", "--json").stdout)
        return sum(o.get("by_target", {}).get(victim, 0) for r, o in out.items() if r != victim)

    # (more than these when forwards sent just before the kill were not yet confirmed)
    wait_until(lambda: outboxed() >= 2 * len(mixed[victim]), 30, "the victim's submissions in outboxes")
    res = world.cli("failover", victim, "--to", heir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "failed over to us-east" in res.stdout
    # Failover changed where the pinned tenant is placed, not what was asked for.
    wait_until(lambda: route(pinned)["home"] == heir, 30, "the pinned tenant placed in the heir")
    assert route(pinned)["reason"] == "pin"
    everything = [*before, *during, long_run]
    for region in (heir, "ap-south"):
        wait_until(lambda r=region: world.all_succeeded(r, everything), 120, f"every run to complete, seen from {region}")
    wait_until(lambda: outboxed() == 0, 30, "the outboxes to empty")

    # The step that was running at the kill ran again exactly once, in the heir, and nowhere else.
    effects = ledger.effects(world.ledger_dir)
    long_a = effects[(str(long_run), "a", None)]
    assert [e["region"] for e in long_a] == [heir], long_a

    # The victim comes back: it catches up, holds no lease (it was failed over), and runs nothing.
    back_at = world.scalar(heir, "SELECT clock_timestamp()")
    world.dev.up()
    world.engines[victim].dispose()  # its pooled connections died with the server
    world.dev.start_worker(victim, extra_env=WORKER_ENV | {"RM_TEST_LEDGER": str(world.ledger_dir)})
    wait_until(lambda: world.all_succeeded(victim, everything), 120, "the victim to catch up")
    wait_until(lambda: "failed_over" in (lease_repo.lease_row(world.engines[victim])["reason"] or ""), 30,
               "the victim to see it was failed over")
    assert not lease_repo.may_work(world.engines[victim])
    # Attempts as the victim's own copy records them (no replication lag in what we count).
    assert world.scalar(victim, "SELECT count(*) FROM step_attempts WHERE region = :v AND started_at > :t",
                        v=victim, t=back_at) == 0
    # Restore refuses while the region is really behind: its link from the heir is paused.
    link = subscription_name(victim, heir)
    with world.engines[victim].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {link} DISABLE"))
    try:
        refused = world.cli("restore", victim, "--timeout", "3")
        assert refused.returncode == 1 and f"{victim} has not applied everything from {heir}" in refused.stderr
    finally:
        with world.engines[victim].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER SUBSCRIPTION {link} ENABLE"))
    res = wait_until(lambda: (r := world.cli("restore", victim)).returncode == 0 and r, 60, "restore")
    assert "restored" in res.stdout
    wait_until(lambda: lease_repo.may_work(world.engines[victim]), 30, "the victim's lease")
    # Once the restore has replicated (and the routers' 2 s cache expired), new runs go home.
    for t in mixed[victim]:
        wait_until(lambda t=t: json.loads(world.cli("--region", "ap-south", "route", t, "--json").stdout)["home"] == victim,
                   30, f"{t} routed home from ap-south")
    wait_until(lambda: route(pinned)["home"] == victim, 30, "the pin to hold again after restore")
    hist = json.loads(world.cli("--region", "ap-south", "tenants", "history", pinned, "--json").stdout)
    assert [(h["home_region"], h["reason"], h["note"]) for h in hist["history"]] == [(victim, "pin", "residency")]
    assert (hist["intent"], hist["placed"]) == (victim, victim)
    home_again = [world.submit(t, "ap-south") for t in mixed[victim]]
    wait_until(lambda: world.all_succeeded(victim, home_again), 60, "new runs of its tenants at home")
    with world.engines[victim].connect() as conn:
        owners = set(conn.execute(text("SELECT owner_region FROM workflow_runs WHERE id = ANY(:i)"), {"i": home_again}).scalars())
    assert owners == {victim}
    # Converged, and once: one run per key; every step's effect once, apart from crash re-runs of
    # steps the victim finished but could not report before it died (counted, each in two regions).
    wait_until(lambda: verify(world.config, timeout=30).identical, 90, "verify to report 0 differences")
    all_ids = list(world.submitted)
    with world.engines[heir].connect() as conn:
        per_key = conn.execute(text(
            "SELECT count(*) FROM workflow_runs WHERE id = ANY(:i) GROUP BY tenant_id, idempotency_key HAVING count(*) <> 1"
        ), {"i": all_ids}).all()
        ok = conn.execute(text("SELECT bool_and(status = 'succeeded'), count(*) FROM workflow_runs WHERE id = ANY(:i)"),
                          {"i": all_ids}).one()
    assert per_key == [] and ok[0] and ok[1] == len(all_ids)
    effects = ledger.effects(world.ledger_dir)
    ledgered = {k: es for k, es in effects.items() if uuid.UUID(k[0]) in set(all_ids)}
    assert len(ledgered) == 4 * len(all_ids), "every step of every run took effect"
    crash_reruns = {k: es for k, es in ledgered.items() if len(es) > 1}
    assert all([e["region"] for e in es] == [victim, heir] for es in crash_reruns.values()), crash_reruns
    assert all(len(es) == 1 for k, es in ledgered.items() if k not in crash_reruns)
    print(f"failover: {len(all_ids)} runs, {len(ledgered)} step effects, {len(crash_reruns)} crash re-run(s)")


def test_graceful_move_under_load_reruns_no_step(world: World) -> None:
    tenant = world.tenants("us-east", 1, "mv")[0]
    stop = threading.Event()
    ids: list[uuid.UUID] = []

    def load() -> None:
        while not stop.is_set():
            ids.append(world.submit(tenant, "ap-south"))
            time.sleep(0.05)

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until(lambda: len(ids) > 10, 30, "load")
        res = world.cli("--region", "ap-south", "tenants", "move", tenant, "--to", "ap-south")
        assert res.returncode == 0, res.stdout + res.stderr
        moved_at = len(ids)
        wait_until(lambda: len(ids) > moved_at + 10, 30, "load after the move")
    finally:
        stop.set()
        t.join()
    wait_until(lambda: world.all_succeeded("ap-south", ids) and world.all_succeeded("us-east", ids), 90, "every run")
    with world.engines["ap-south"].connect() as conn:
        attempts = conn.execute(text(
            "SELECT task_id, count(*) FROM step_attempts WHERE run_id = ANY(:i) GROUP BY task_id HAVING count(*) > 1"
        ), {"i": ids}).all()
        owners = dict(conn.execute(text("SELECT id, owner_region FROM workflow_runs WHERE id = ANY(:i)"), {"i": ids}).all())
    assert attempts == [], "a step ran twice"
    assert owners[ids[0]] == "us-east" and owners[ids[-1]] == "ap-south"
    assert set(owners.values()) == {"us-east", "ap-south"}


def test_drain_moves_tenants_and_restore_brings_them_home(world: World) -> None:
    tenants = world.tenants("ap-south", 2, "drain")
    first = [world.submit(t, "ap-south") for t in tenants]
    wait_until(lambda: world.all_succeeded("ap-south", first), 60, "runs at home")
    res = world.cli("drain", "ap-south", "--to", "us-east")
    assert res.returncode == 0, res.stdout + res.stderr
    for t in tenants:
        wait_until(lambda t=t: json.loads(world.cli("--region", "eu-west", "route", t, "--json").stdout)["home"] == "us-east",
                   30, "the drain to replicate")
    assert world.scalar("ap-south", "SELECT status FROM regions WHERE name = 'ap-south'") == "draining"
    res = world.cli("restore", "ap-south")
    assert res.returncode == 0, res.stdout + res.stderr
    for t in tenants:
        wait_until(lambda t=t: json.loads(world.cli("--region", "eu-west", "route", t, "--json").stdout)["home"] == "ap-south",
                   30, "the restore to replicate")
