"""Data residency on a four-region mesh (zone eu = eu-west + eu-central; us-east and ap-south
outside): a zoned tenant's inputs and outputs are in no database outside the zone (pg_dump of
each), in both zone regions; its metadata is everywhere; placement never leaves the zone."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from regionmesh.client import Journal, confirm, submit
from regionmesh.config import MeshConfig
from regionmesh.models.engine import engine_for, make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.cli import cli
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.ops.failover import FailoverRefused, failover, restore, set_intent
from regionmesh.ops.residency import bind_zone
from regionmesh.replication.verify import verify
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
        bindir = self.dev.pg_bindir
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
        keep = bool(os.environ.get("RM_KEEP_MESH"))  # keeps logs and data to look at a failure
        leftover = down_and_leftovers(dev, root, purge=not keep)
        if not keep:
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
    zoned = tenant_homed(["eu-central"], "zpin")
    # eu-west does not hear eu-central: a pin asked through eu-west right after the binding is
    # written (at eu-central, which places the tenant) must still be refused (CI once let it pass).
    link = subscription_name("eu-west", "eu-central")
    admin = make_engine(world.dev.admin_url("eu-west", DATABASE), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {link} DISABLE"))
    try:
        assert bind_zone(cfg, zoned, "eu", "eu-west")[0] == "eu-central"
        with world.engines["eu-west"].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tenant_zones WHERE tenant_id = :t"), {"t": zoned}).scalar() == 0
        with pytest.raises(FailoverRefused, match="zone eu"):
            set_intent(cfg, zoned, "us-east", "pin", None, "eu-west")
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER SUBSCRIPTION {link} ENABLE"))
        admin.dispose()
    bound_everywhere(world, zoned)
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


def test_a_zoned_submission_outside_the_zone_leaves_no_input_there(world: World, tmp_path: Path) -> None:
    cfg = world.config
    journal = Journal(tmp_path / "journal.jsonl")
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
                    config=unaware, resolve_home=False, journal=journal)
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
    # The journaled producer sent it to ap-south, which holds only the run's summary: that is held
    # (the rows stay in the zone), not a loss to send again and again.
    settled = confirm(journal, cfg, resend_after_s=0)
    assert (settled.held, settled.resent) == (1, 0), settled
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


def succeeded_in(world: World, region: str, runs: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """run id -> owner of the runs that succeeded, as ``region``'s own copy holds them."""
    with world.engines[region].connect() as conn:
        return dict(conn.execute(text("SELECT id, owner_region FROM workflow_runs WHERE id = ANY(:ids) "
                                      "AND status = 'succeeded'"), {"ids": runs}).all())


def test_failover_of_the_zone_s_home_stays_in_the_zone_with_real_kills(world: World) -> None:
    """Last in the module: it kills both zone regions (SIGKILL) and brings them back."""
    cfg = world.config
    tenant = next(t for i in range(1000) if home_by_hash(t := f"zfo-{i}", REGIONS) == "eu-west")
    assert bind_zone(cfg, tenant, "eu", "us-east")[0] == "eu-west"
    bound_everywhere(world, tenant)
    mark = f"fmark{uuid.uuid4().hex[:12]}"
    unaware = dataclasses.replace(cfg, zones={})

    def send(i: int, via: str, config: MeshConfig = cfg) -> uuid.UUID:
        return submit(tenant, "onboard", {"email": f"{mark}{i}@example.com", "name": f"{mark}n{i}"}, f"{mark}-{i}",
                      region=via, config=config, resolve_home=False).run_id

    first = send(0, "eu-central")
    wait_until(lambda: succeeded_in(world, "eu-west", [first]) == {first: "eu-west"}, 60, "a run at the zone's home")

    # The zone's home dies. Its failover is refused toward every region outside the zone and goes
    # to the other one inside; what waited for it in eu-central's outbox runs there.
    world.dev.kill_region("eu-west")
    waited = send(1, "eu-central", unaware)  # its placement (eu-west) is dead: eu-central keeps it
    for outside in OUTSIDE:
        with pytest.raises(FailoverRefused, match=f"{outside} is outside the zone: fail over to eu-central instead"):
            failover(cfg, "eu-west", outside, timeout_s=1)
    report = failover(cfg, "eu-west", "eu-central")
    assert report.to_region == "eu-central"
    wait_until(lambda: succeeded_in(world, "eu-central", [waited]) == {waited: "eu-central"}, 120,
               "the waiting run done in eu-central")

    # Now the other region of the zone dies too: none outside may take the zone's tenants. A
    # producer that knows nothing of zones hands a submission to us-east; it waits there, unwritten.
    world.dev.kill_region("eu-central")
    for outside in OUTSIDE:
        with pytest.raises(FailoverRefused, match="no other region of zone eu is active") as refused:
            failover(cfg, "eu-central", outside, even_if_reachable=True, timeout_s=1)
        assert "outside the zone" in str(refused.value)
    receipt = submit(tenant, "onboard", {"email": f"{mark}2@example.com", "name": f"{mark}n2"}, f"{mark}-2",
                     region="us-east", config=unaware, resolve_home=False)
    held = receipt.run_id
    logs = sorted((world.dev.root / "logs").glob("worker-us-east-*.log"))
    wait_until(lambda: any("submit.zone_unreachable" in line and receipt.submission_id in line
                           for log in logs for line in log.read_text(errors="replace").splitlines()),
               60, "us-east to find the zone unreachable and keep the message in its broker")
    with world.engines["us-east"].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox WHERE submission_id = :s"),
                            {"s": receipt.submission_id}).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM workflow_runs WHERE id = :r"), {"r": held}).scalar() == 0

    # The zone returns: eu-central runs what waited in us-east's broker, eu-west is restored and
    # the tenant goes home.
    world.dev.up()
    for region in EU:
        world.engines[region].dispose()  # their pooled connections died with the servers
        world.dev.start_worker(region, concurrency=1)
    wait_until(lambda: succeeded_in(world, "eu-central", [held]) == {held: "eu-central"}, 120,
               "the run held in us-east's broker done in eu-central")
    wait_until(lambda: _restored(cfg, "eu-west"), 90, "eu-west restored")
    home = send(3, "us-east")  # the client publishes into the zone
    wait_until(lambda: succeeded_in(world, "eu-west", [home]) == {home: "eu-west"}, 90, "a new run at home again")

    runs = [first, waited, held, home]
    for region in REGIONS:
        wait_until(lambda r=region: world.engines[r].connect().execute(  # type: ignore[misc]
            text("SELECT count(*) FROM run_summaries WHERE run_id = ANY(:ids) AND status = 'succeeded'"),
            {"ids": runs}).scalar() == len(runs), 60, f"the summaries in {region}")
    for region in OUTSIDE:
        assert mark not in world.dump(region), f"an input or output of zone eu is in {region}'s database"
        with world.engines[region].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"),
                                {"t": tenant}).scalar() == 0
    for region in EU:
        wait_until(lambda r=region: set(succeeded_in(world, r, runs)) == set(runs), 60, f"every run in {region}")
        assert all(f"{mark}{i}@" in world.dump(region) for i in range(len(runs)))
    wait_until(lambda: verify(cfg, timeout=30).identical, 90, "verify to report 0 differences")


def _restored(cfg: MeshConfig, region: str) -> bool:
    try:
        restore(cfg, region, timeout_s=10)
    except FailoverRefused as exc:
        print("restore refused:", exc)
        return False
    return True
