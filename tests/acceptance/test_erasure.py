"""Tenant erasure on a four-region zoned mesh (zone eu = eu-west + eu-central; us-east and ap-south
outside), with eu-central down (PostgreSQL and workers stopped) during the erase: after it returns,
no database of the mesh holds any marker of either tenant (pg_dump of each, local tables included),
the receipt is complete, the erased tenant's new submission is refused with a reason (and leaves
neither its id nor its input), and re-enabling lets it submit again."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.models.engine import engine_for
from regionmesh.models.residency import tenant_hash
from regionmesh.ops.cli import cli
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.ops.residency import bind_zone
from regionmesh.routing.hashing import home_by_hash
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import scalar, wait_until

pytestmark = pytest.mark.acceptance

REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]
EU = ["eu-west", "eu-central"]
DOWN = "eu-central"


class World:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config
        self.engines: dict[str, Engine] = {r: engine_for(config, r) for r in REGIONS}

    def dump(self, region: str) -> str:
        """pg_dump of every table's data in the region's database (replicated and local tables)."""
        bindir = self.dev.pg_bindir
        out = subprocess.run([str(bindir / "pg_dump"), "--data-only", "-d", self.dev.admin_url(region, DATABASE)],
                             capture_output=True, text=True, timeout=120, check=True)
        return out.stdout

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.dev.mesh_file), "--region", "us-east", *args])


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-erasure-")
    dev = DevMesh(root)
    try:
        config = dev.up(REGIONS, workers=1, concurrency=1, zones={"eu": EU})
        w = World(dev, config)
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def zoned_tenant(prefix: str) -> str:
    """Placed in eu-west both by the whole mesh's hash (so it can be bound without a move) and the zone's."""
    return next(t for i in range(5000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) == "eu-west"
                and home_by_hash(t, EU) == "eu-west")


def open_tenant(prefix: str) -> str:
    return next(t for i in range(5000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) == "us-east")


def tables_holding(dump: str, markers: tuple[str, ...]) -> list[str]:
    """The tables of a pg_dump whose data holds any of ``markers`` (each with a line holding it)."""
    found: dict[str, str] = {}
    table = "?"
    for line in dump.splitlines():
        if line.startswith("COPY "):
            table = line.split()[1]
        elif any(m in line for m in markers):
            found.setdefault(table, line[:300])
    return [f"{t}: {line}" for t, line in found.items()]


def status(world: World, tenant: str) -> tuple[int, dict[str, Any]]:
    res = world.cli("tenants", "erase", tenant, "--status", "--json")
    return res.exit_code, json.loads(res.output)


def test_erase_with_a_region_down_leaves_no_marker_anywhere(world: World) -> None:
    cfg = world.config
    # The markers are the tenant ids themselves and every input: none may survive anywhere.
    zmark, omark = f"zmark{uuid.uuid4().hex[:10]}", f"omark{uuid.uuid4().hex[:10]}"
    zoned, unzoned = zoned_tenant(zmark), open_tenant(omark)
    bind_zone(cfg, zoned, "eu", "eu-west")
    wait_until(lambda: all(scalar(e, "SELECT count(*) FROM tenant_zones WHERE tenant_id = :t", t=zoned)
                           for e in world.engines.values()), 20, "the binding in every region")
    runs = [submit(zoned, "onboard", {"email": f"{zmark}{i}@example.com", "name": f"{zmark}n{i}"},
                   region="eu-west", config=cfg).run_id for i in range(2)]
    runs += [submit(unzoned, "onboard", {"email": f"{omark}{i}@example.com", "name": f"{omark}n{i}"},
                    region="us-east", config=cfg).run_id for i in range(2)]
    # Local tables too: a refused message of each (a dead letter with the tenant id; the unzoned one's
    # keeps a body prefix holding its input), one of them outside the zoned tenant's zone.
    unaware = dataclasses.replace(cfg, zones={})
    bad = [submit(zoned, "onboard", [f"{zmark}bad"], region="ap-south", config=unaware,  # type: ignore[arg-type]
                  resolve_home=False),
           submit(unzoned, "onboard", [f"{omark}bad"], region="us-east", config=cfg)]  # type: ignore[arg-type]

    def settled() -> bool:
        for region, engine in world.engines.items():
            done = scalar(engine, "SELECT count(*) FROM run_summaries WHERE run_id = ANY(:ids) AND status = 'succeeded'",
                          ids=runs[:2]) == 2
            done &= scalar(engine, "SELECT count(*) FROM workflow_runs WHERE id = ANY(:ids) AND status = 'succeeded'",
                           ids=runs if region in EU else runs[2:]) == (4 if region in EU else 2)
            if not done:
                return False
        return all(scalar(world.engines[r], "SELECT count(*) FROM dead_letters WHERE submission_id = :s",
                          s=b.submission_id) == 1 for r, b in zip(("ap-south", "us-east"), bad, strict=True))

    wait_until(settled, 60, "runs finished everywhere and both refusals dead-lettered")
    before = {r: world.dump(r) for r in REGIONS}
    assert all(omark in d and zoned in d for d in before.values())  # the check can see the markers
    assert all(zmark + "0@" in before[r] for r in EU)

    # eu-central goes down: workers first, then its PostgreSQL.
    for w in world.dev.workers(DOWN):
        world.dev.stop_worker(DOWN, w.name)
    world.dev.stop_pg(DOWN)
    for tenant in (zoned, unzoned):
        res = world.cli("tenants", "erase", tenant, "--yes", "--json")
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert out["state"] == "erased" and out["pending"] == [DOWN] and out["unreachable"] == [DOWN]
        assert sorted(out["confirmed"]) == sorted(r for r in REGIONS if r != DOWN)
        assert tenant not in res.output
        code, _ = status(world, tenant)
        assert code == 1  # not complete while eu-central has not confirmed
        refused = world.cli("tenants", "erase", tenant, "--reenable")
        assert refused.exit_code == 1 and "eu-central have not confirmed" in str(refused.exception)
    # A new submission of an erased tenant is refused with the reason, keeping neither id nor input.
    again = submit(unzoned, "onboard", {"email": f"{omark}x@example.com", "name": omark}, region="us-east", config=cfg)
    def refusal() -> Any:
        with world.engines["us-east"].connect() as conn:
            return conn.execute(text("SELECT reason, tenant_id, payload FROM dead_letters WHERE submission_id = :s"),
                                {"s": again.submission_id}).mappings().first()

    letter = wait_until(refusal, 30, "the refusal of the erased tenant")
    assert "tenant was erased" in letter["reason"] and "--reenable" in letter["reason"]
    assert letter["tenant_id"] is None and letter["payload"] is None
    assert scalar(world.engines["us-east"], "SELECT count(*) FROM workflow_runs WHERE id = :r", r=again.run_id) == 0

    # eu-central returns: its PostgreSQL, then a worker (whose reconciler applies the erasures).
    world.dev.up()
    world.dev.start_worker(DOWN, concurrency=1)
    for tenant in (zoned, unzoned):
        wait_until(lambda t=tenant: status(world, t)[0] == 0, 60, f"every region to confirm {tenant}")  # type: ignore[misc]
        code, out = status(world, tenant)
        assert out["complete"] and sorted(out["confirmed"]) == sorted(REGIONS) and out["unreachable"] == []
        h = tenant_hash(tenant)
        for region, engine in world.engines.items():  # the receipt is kept in every region
            with engine.connect() as conn:
                receipt = conn.execute(text("SELECT state, regions FROM tenant_erasures WHERE tenant_hash = :h"),
                                       {"h": h}).one()
                assert receipt.state == "erased" and sorted(receipt.regions) == sorted(REGIONS), region
                assert conn.execute(text("SELECT count(*) FROM erasure_confirmations WHERE tenant_hash = :h"),
                                    {"h": h}).scalar() == 4, region

    def no_marker_anywhere() -> list[str]:
        return [f"{r}: {table}" for r in REGIONS for table in tables_holding(world.dump(r), (zmark, omark))]

    try:
        wait_until(lambda: not no_marker_anywhere(), 30, "no marker in any region")
    except AssertionError:
        raise AssertionError(f"markers left after the erasure: {no_marker_anywhere()}") from None

    # Re-enabled, the tenant submits again (a new tenant as far as the mesh knows).
    res = world.cli("tenants", "erase", unzoned, "--reenable", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["state"] == "enabled"
    back = submit(unzoned, "onboard", {"email": "back@example.com", "name": "back"}, region="us-east", config=cfg)
    wait_until(lambda: scalar(world.engines["ap-south"], "SELECT status FROM workflow_runs WHERE id = :r",
                              r=back.run_id) == "succeeded", 30, "the re-enabled tenant's run everywhere")
    code, out = status(world, unzoned)
    assert out["state"] == "enabled" and out["complete"]  # the receipt of the erasure is kept
