"""A two-region mesh has no majority after a split: both sides stop, failover is refused, and only
the explicit --override-dead-minority fails one over (waiting for the survivor's own promise)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import lease as lease_repo
from regionmesh.models import subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import FailoverRefused, failover
from regionmesh.replication.setup import conninfo
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing.proxy import Proxy
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ["us-east", "eu-west"]
REPO_ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def mesh2() -> Iterator[tuple[DevMesh, MeshConfig, dict[str, Engine], list[Proxy]]]:
    root = make_mesh_dir("rm-two-")
    env = {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows", "PYTHONPATH": REPO_ROOT,
           "REGIONMESH_RECONCILE_INTERVAL_S": "0.3", "REGIONMESH_LEASE_S": "4"}
    dev = DevMesh(root)
    proxies: list[Proxy] = []
    try:
        dev.up(REGIONS, workers=1, worker_env=env)
        config = load_config(str(dev.mesh_file))
        engines = {r: make_engine(config.regions[r].database_url, region=r) for r in REGIONS}
        for sub, pub in (("us-east", "eu-west"), ("eu-west", "us-east")):
            port = int(config.regions[pub].peer_conninfo.split("port=")[1].split()[0])
            proxy = Proxy(port)
            proxies.append(proxy)
            info = conninfo(config, pub, sub).replace(f"port={port}", f"port={proxy.port}")
            subscribing.set_subscription_connection(engines[sub], subscription_name(sub, pub), info)
        yield dev, config, engines, proxies
    finally:
        for proxy in proxies:
            proxy.close()
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_a_split_two_region_mesh_stops_and_fails_over_only_by_override(
        mesh2: tuple[DevMesh, MeshConfig, dict[str, Engine], list[Proxy]]) -> None:
    dev, config, engines, proxies = mesh2
    wait_until(lambda: all(lease_repo.may_work(e) for e in engines.values()), 60, "both leases")
    for proxy in proxies:
        proxy.sever()
    for region, engine in engines.items():
        wait_until(lambda e=engine: not lease_repo.may_work(e), 10, f"{region} to stop (no majority of two)")
    with pytest.raises(FailoverRefused, match="holds no lease"):
        failover(config, "eu-west", "us-east", even_if_reachable=True, timeout_s=5)
    report = failover(config, "eu-west", "us-east", override_dead_minority=True, timeout_s=60)
    assert report.waited_s >= 0
    # us-east is the only voter now and works alone; eu-west's tenants run there.
    wait_until(lambda: lease_repo.may_work(engines["us-east"]), 15, "us-east's lease alone")
    assert not lease_repo.may_work(engines["eu-west"])
    tenant = next(t for i in range(5000) if home_by_hash(t := f"two-{i}", REGIONS) == "eu-west")
    run = submit(tenant, "onboard", {"email": "t@example.com"}, f"k-{uuid.uuid4()}", region="us-east",
                 config=config, resolve_home=False).run_id
    from sqlalchemy import text

    def done() -> bool:
        with engines["us-east"].connect() as conn:
            row = conn.execute(text("SELECT status, owner_region FROM workflow_runs WHERE id = :i"), {"i": run}).first()
        return row is not None and tuple(row) == ("succeeded", "us-east")

    wait_until(done, 60, "eu-west's tenant to run in us-east")
