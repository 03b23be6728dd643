"""verify and prune on a four-region mesh with a zone (eu = eu-west + eu-central; us-east and
ap-south outside): verify compares payload tables per zone and fails on a payload row held
outside its zone; prune from outside the zone removes the zone's old runs too, and their
summaries everywhere. Real PostgreSQL 16, no workers, no mocks."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from bench.resync import load_finished_runs
from regionmesh.config import MeshConfig
from regionmesh.models.engine import make_engine
from regionmesh.ops.devmesh import DevMesh
from regionmesh.replication.retention import prune
from regionmesh.replication.verify import verify
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]
EU = ["eu-west", "eu-central"]
OUTSIDE = ["us-east", "ap-south"]


class Mesh:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev, self.config = dev, config
        self.engines = {r: make_engine(config.regions[r].database_url, region=r, pool_size=2) for r in REGIONS}


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    root = make_mesh_dir("rm-zoneops-")
    dev = DevMesh(root)
    try:
        m = Mesh(dev, dev.up(REGIONS, zones={"eu": EU}))
        yield m
        for e in m.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def add_runs(engine: Engine, tenant: str, tag: str, n: int, days_ago: int) -> None:
    """``n`` runs finished ``days_ago`` days ago, each with a step, a task and an attempt (local writes:
    the zone is stamped from the tenant's binding)."""
    load_finished_runs(engine, n, tag, days_ago, tenant=tenant)


def counts(mesh: Mesh, sql: str, **params: Any) -> dict[str, int]:
    return {r: int(scalar(e, sql, **params)) for r, e in mesh.engines.items()}


def test_verify_compares_per_zone_and_prune_reaches_the_zone(mesh: Mesh) -> None:
    tag = uuid.uuid4().hex[:8]
    zoned, unzoned = f"z-{tag}", f"u-{tag}"
    with mesh.engines["eu-west"].begin() as conn:
        conn.execute(text("INSERT INTO tenant_zones (tenant_id, zone) VALUES (:t, 'eu')"), {"t": zoned})
    wait_until(lambda: all(scalar(e, "SELECT zone FROM tenant_zones WHERE tenant_id = :t", t=zoned) == "eu"
                           for e in mesh.engines.values()), 30, "the binding everywhere")
    add_runs(mesh.engines["eu-west"], zoned, f"{tag}old", 20, days_ago=40)
    add_runs(mesh.engines["eu-central"], zoned, f"{tag}new", 5, days_ago=1)
    add_runs(mesh.engines["us-east"], unzoned, f"{tag}uold", 10, days_ago=40)
    runs_of = "SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"
    summaries_of = "SELECT count(*) FROM run_summaries WHERE tenant_id = :t"
    wait_until(lambda: counts(mesh, runs_of, t=zoned) == {"eu-west": 25, "eu-central": 25, "us-east": 0, "ap-south": 0}
               and set(counts(mesh, summaries_of, t=zoned).values()) == {25}
               and set(counts(mesh, runs_of, t=unzoned).values()) == {10}, 30,
               "zoned runs in the zone only, their summaries and the unzoned runs everywhere")
    result = verify(mesh.config, timeout=60)
    assert result.identical, ({t: list(d)[:5] for t, d in result.differences.items() if d}, result.outside_zone)
    total = {r: int(scalar(e, "SELECT count(*) FROM workflow_runs")) for r, e in mesh.engines.items()}
    assert result.rows["workflow_runs"] == total and total["eu-west"] == total["us-east"] + 25

    # A zoned run written outside the zone (what residency forbids): verify names the region and
    # the zone. PostgreSQL sends it into the zone but never to ap-south.
    add_runs(mesh.engines["us-east"], zoned, f"{tag}planted", 1, days_ago=40)
    wait_until(lambda: counts(mesh, runs_of, t=zoned) == {"eu-west": 26, "eu-central": 26, "us-east": 1, "ap-south": 0},
               30, "the planted run in the zone and in us-east")
    breached = verify(mesh.config, timeout=60)
    assert not breached.identical
    assert breached.outside_zone == {"workflow_runs": {"us-east": {"eu": 1}}, "workflow_steps": {"us-east": {"eu": 1}},
                                     "step_tasks": {"us-east": {"eu": 1}}}, breached.outside_zone
    assert not any(breached.differences.values()), breached.differences

    # Prune from outside the zone: the zone's old runs are tombstoned and removed in the zone.
    report = prune(mesh.config, "us-east", 30 * 86400, timeout=60)
    assert report.runs >= 10 + 1 + 20, report
    wait_until(lambda: counts(mesh, runs_of, t=zoned) == {"eu-west": 5, "eu-central": 5, "us-east": 0, "ap-south": 0}
               and set(counts(mesh, summaries_of, t=zoned).values()) == {5}
               and set(counts(mesh, runs_of, t=unzoned).values()) == {0}, 30,
               "old runs gone where they were held, their summaries gone everywhere")
    for table in ("workflow_steps", "step_tasks", "step_attempts"):
        assert set(counts(mesh, f"SELECT count(*) FROM {table} WHERE run_id IN "
                                "(SELECT md5(:t || i)::uuid FROM generate_series(1, 20) i)", t=f"{tag}old").values()) == {0}
    after = verify(mesh.config, timeout=60)
    assert after.identical, ({t: list(d)[:5] for t, d in after.differences.items() if d}, after.outside_zone)
