"""Data residency on a four-region mesh (zone eu = eu-west + eu-central; us-east and ap-south
outside): a zoned tenant's inputs and outputs are in no database outside the zone (pg_dump of
each), in both zone regions; its metadata is everywhere; placement never leaves the zone."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.models.engine import engine_for
from regionmesh.ops.cli import cli
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.ops.failover import FailoverRefused, failover, set_intent
from regionmesh.ops.residency import bind_zone
from regionmesh.routing.hashing import home_by_hash
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

pytestmark = pytest.mark.acceptance

REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]
EU = ["eu-west", "eu-central"]
OUTSIDE = ["us-east", "ap-south"]


class World:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config
        self.engines: dict[str, Engine] = {r: engine_for(config, r) for r in REGIONS}

    def dump(self, region: str) -> str:
        """pg_dump of the region's database, with the mesh's own PostgreSQL binaries."""
        bindir = Path(self.dev.state.load()["pg_bindir"])
        out = subprocess.run([str(bindir / "pg_dump"), "--data-only", "-d", self.dev.admin_url(region, DATABASE)],
                             capture_output=True, text=True, timeout=120, check=True)
        return out.stdout


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-residency-")
    dev = DevMesh(root)
    try:
        config = dev.up(REGIONS, workers=1, concurrency=1, zones={"eu": EU})
        assert config.zones == {"eu": tuple(EU)}
        w = World(dev, config)
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def tenant_homed(regions: list[str], prefix: str) -> str:
    """A tenant whose hash over the whole mesh places it in one of ``regions``."""
    return next(t for i in range(1000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) in regions)


def test_zoned_payloads_stay_in_the_zone_and_metadata_goes_everywhere(world: World) -> None:
    cfg = world.config
    zoned, open_tenant = tenant_homed(EU, "zoned"), tenant_homed(OUTSIDE, "open")
    where, epoch = bind_zone(cfg, zoned, "eu", "us-east")
    assert where in EU and epoch == 1
    # The binding replicated: every region now places the tenant inside the zone.
    for region in REGIONS:
        wait_until(lambda r=region: world.engines[r].connect().execute(  # type: ignore[misc]
            text("SELECT zone FROM tenant_zones WHERE tenant_id = :t"), {"t": zoned}).scalar() == "eu",
            20, f"binding in {region}")
    zmark, omark = f"zmark{uuid.uuid4().hex[:12]}", f"omark{uuid.uuid4().hex[:12]}"
    runs = [submit(zoned, "onboard", {"email": f"{zmark}{i}@example.com", "name": f"{zmark}n{i}"},
                   region=EU[i % 2], config=cfg).run_id for i in range(3)]
    control = submit(open_tenant, "onboard", {"email": f"{omark}@example.com", "name": omark},
                     region="us-east", config=cfg).run_id

    def finished_everywhere() -> bool:
        for region, engine in world.engines.items():
            with engine.connect() as conn:
                zoned_done = conn.execute(text(
                    "SELECT count(*) FROM run_summaries WHERE run_id = ANY(:ids) AND status = 'succeeded'"),
                    {"ids": runs}).scalar()
                control_done = conn.execute(text(
                    "SELECT count(*) FROM workflow_runs WHERE id = :c AND status = 'succeeded'"), {"c": control}).scalar()
                in_zone_runs = conn.execute(text(
                    "SELECT count(*) FROM workflow_runs WHERE id = ANY(:ids) AND status = 'succeeded'"),
                    {"ids": runs}).scalar()
            if zoned_done != 3 or control_done != 1 or (region in EU and in_zone_runs != 3):
                return False
        return True

    wait_until(finished_everywhere, 90, "zoned runs finished, metadata and control run everywhere")
    for region in OUTSIDE:
        with world.engines[region].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"), {"t": zoned}).scalar() == 0
            steps = conn.execute(text("SELECT steps FROM run_summaries WHERE run_id = :r"), {"r": runs[0]}).scalar()
            assert steps and set(steps.values()) == {"succeeded"}
        dump = world.dump(region)
        assert zmark not in dump, f"a payload of zone eu is in {region}'s database"
        assert omark in dump  # the check can see a marker: the unzoned tenant's is everywhere
    for region in EU:
        dump = world.dump(region)
        assert dump.count(zmark) >= 6, f"{region} should hold the zoned inputs and outputs"
        assert omark in dump


def test_placement_and_operations_never_leave_the_zone(world: World) -> None:
    cfg = world.config
    zoned = tenant_homed(EU, "zpin")
    bind_zone(cfg, zoned, "eu", "eu-west")
    with pytest.raises(FailoverRefused, match="zone eu"):
        set_intent(cfg, zoned, "us-east", "pin", None, "eu-west")
    with pytest.raises(FailoverRefused, match="zone eu"):
        failover(cfg, "eu-west", "us-east", even_if_reachable=True, timeout_s=1)
    outsider = tenant_homed(OUTSIDE, "zout")
    with pytest.raises(FailoverRefused, match="outside zone eu"):
        bind_zone(cfg, outsider, "eu", "us-east")


def bound_everywhere(world: World, tenant: str) -> None:
    for region in REGIONS:
        wait_until(lambda r=region: world.engines[r].connect().execute(  # type: ignore[misc]
            text("SELECT zone FROM tenant_zones WHERE tenant_id = :t"), {"t": tenant}).scalar() == "eu",
            20, f"binding in {region}")


def test_a_zoned_submission_outside_the_zone_leaves_no_input_there(world: World) -> None:
    cfg = world.config
    zoned = tenant_homed(EU, "zpath")
    bind_zone(cfg, zoned, "eu", "eu-west")
    bound_everywhere(world, zoned)
    mark = f"pmark{uuid.uuid4().hex[:12]}"
    # The client publishes a zoned tenant straight into its zone, whatever region it was given.
    direct = submit(zoned, "onboard", {"email": f"{mark}a@example.com", "name": f"{mark}a"}, region="us-east", config=cfg)
    assert direct.region in EU
    # A producer that knows nothing of zones publishes to ap-south: passed on, kept nowhere there.
    unaware = dataclasses.replace(cfg, zones={})
    passed = submit(zoned, "onboard", {"email": f"{mark}b@example.com", "name": f"{mark}b"}, region="ap-south",
                    config=unaware, resolve_home=False)
    assert passed.region == "ap-south"
    bad = submit(zoned, "onboard", [f"{mark}bad"], region="ap-south", config=unaware,  # type: ignore[arg-type]
                 resolve_home=False)
    runs = [direct.run_id, passed.run_id]

    def done() -> bool:
        with world.engines["eu-central"].connect() as conn:
            ok = conn.execute(text("SELECT count(*) FROM workflow_runs WHERE id = ANY(:ids) AND status = 'succeeded'"),
                              {"ids": runs}).scalar() == 2
        with world.engines["ap-south"].connect() as conn:
            letter = conn.execute(text("SELECT count(*) FROM dead_letters WHERE submission_id = :s"),
                                  {"s": bad.submission_id}).scalar() == 1
            summaries = conn.execute(text(
                "SELECT count(*) FROM run_summaries WHERE run_id = ANY(:ids) AND status = 'succeeded'"),
                {"ids": runs}).scalar() == 2
        return ok and letter and summaries

    wait_until(done, 90, "both runs finished in the zone, the bad one dead-lettered in ap-south")
    with world.engines["ap-south"].connect() as conn:
        letter = conn.execute(text("SELECT payload, payload_size, tenant_id, reason FROM dead_letters "
                                   "WHERE submission_id = :s"), {"s": bad.submission_id}).mappings().one()
        assert letter["payload"] is None and letter["payload_size"] > 0 and letter["tenant_id"] == zoned
        assert "input must be a JSON object" in letter["reason"]
        assert conn.execute(text("SELECT count(*) FROM outbox WHERE submission_id = :s"),
                            {"s": passed.submission_id}).scalar() == 0
    for region in OUTSIDE:
        assert mark not in world.dump(region), f"an input of zone eu is in {region}'s database"
    assert mark in world.dump("eu-west")  # the check can see the marker
    # Outside the zone, 'runs show' reads the summary and says where the payload is.
    shown = CliRunner().invoke(cli, ["--config", str(world.dev.mesh_file), "runs", "show", str(passed.run_id),
                                     "--in", "us-east"])
    assert shown.exit_code == 0, shown.output
    assert "status=succeeded" in shown.output and "held in zone eu only (eu-west, eu-central)" in shown.output
    as_json = CliRunner().invoke(cli, ["--config", str(world.dev.mesh_file), "runs", "show", str(passed.run_id),
                                       "--in", "ap-south", "--json"])
    assert json.loads(as_json.output)["payload_held_in"] == EU and mark not in as_json.output
