"""A zone binding still replicating (issue 21, item 7), on a three-region mesh (zone eu = eu-west +
eu-central; us-east outside): us-east takes a zoned tenant's submissions before the binding reached
it, so it forwards them with an outbox entry and refuses a bad one with a dead letter, input
included. The home's receipt (by broker) ends the entry while the binding is still held back; once
the binding arrives, the zone scrub leaves no input of the tenant in us-east's database within one
reconciler pass (pg_dump); the runs happen in the zone once.

Replication of the binding is held back by disabling us-east's subscription from the placer."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.host import pid_alive
from regionmesh.models.engine import engine_for, make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.ops.residency import bind_zone
from regionmesh.routing.hashing import home_by_hash
from regionmesh.supervisor import terminate
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

pytestmark = pytest.mark.acceptance

REGIONS = ["eu-west", "eu-central", "us-east"]
PLACER, OUTSIDE = "eu-west", "us-east"
# The bound the docs state: one reconciler pass after the binding is applied (0.5 s in the dev
# mesh), plus the pass itself and this test's polling.
SCRUB_BOUND_S = 5.0
# The home's receipt: its publish after the run's creation, and us-east taking it from its queue.
RECEIPT_BOUND_S = 10.0


class World:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config
        self.engines: dict[str, Engine] = {r: engine_for(config, r) for r in REGIONS}
        self.unaware = dataclasses.replace(config, zones={})  # a producer that knows nothing of zones

    def dump(self, region: str) -> str:
        out = subprocess.run([str(self.dev.pg_bindir / "pg_dump"), "--data-only", "-d",
                              self.dev.admin_url(region, DATABASE)],
                             capture_output=True, text=True, timeout=120, check=True)
        return out.stdout

    def scalar(self, region: str, sql: str, **params: object) -> Any:
        with self.engines[region].connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def hold_back(self, held: bool) -> None:
        """Disable (or enable again) us-east's subscription from the placer: nothing the placer
        writes, the binding included, reaches us-east meanwhile."""
        admin = make_engine(self.dev.admin_url(OUTSIDE, DATABASE), pool_size=1)
        try:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                verb = "DISABLE" if held else "ENABLE"
                conn.execute(text(f"ALTER SUBSCRIPTION {subscription_name(OUTSIDE, PLACER)} {verb}"))
        finally:
            admin.dispose()

    def bound_here(self, region: str, tenant: str) -> bool:
        return bool(self.scalar(region, "SELECT zone FROM tenant_zones WHERE tenant_id = :t", t=tenant) == "eu")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-zone-window-")
    dev = DevMesh(root)
    try:
        config = dev.up(REGIONS, workers=1, concurrency=1, zones={"eu": ["eu-west", "eu-central"]})
        w = World(dev, config)
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        keep = bool(os.environ.get("RM_KEEP_MESH"))
        leftover = down_and_leftovers(dev, root, purge=not keep)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def tenant_at_placer(prefix: str) -> str:
    return next(t for i in range(1000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) == PLACER)


def zone_while_held_back(world: World, tenant: str) -> None:
    """Bind ``tenant`` to eu at the placer while us-east does not hear it."""
    world.hold_back(True)
    assert bind_zone(world.config, tenant, "eu", PLACER)[0] == PLACER
    wait_until(lambda: world.bound_here("eu-central", tenant), 20, "the binding in eu-central")
    assert not world.bound_here(OUTSIDE, tenant)


def logged(world: World, region: str, name: str, submission_id: str) -> bool:
    """Whether a worker of ``region`` logged event ``name`` about ``submission_id``."""
    return any(name in line and submission_id in line
               for log in (world.dev.root / "logs").glob(f"worker-{region}-*.log")
               for line in log.read_text(errors="replace").splitlines())


def held_input(world: World, mark: str) -> dict[str, int]:
    """Rows of us-east's local tables that hold ``mark`` (the input of the zoned tenant)."""
    return {table: int(world.scalar(OUTSIDE, f"SELECT count(*) FROM {table} WHERE payload::text LIKE :m",
                                    m=f"%{mark}%"))
            for table in ("outbox", "dead_letters")}


def release_and_time_the_scrub(world: World, tenant: str, mark: str) -> float:
    """Let the binding reach us-east; return how long after it was there no input was left."""
    world.hold_back(False)
    wait_until(lambda: world.bound_here(OUTSIDE, tenant), 30, "the binding in us-east")
    applied = time.monotonic()
    wait_until(lambda: sum(held_input(world, mark).values()) == 0, SCRUB_BOUND_S,
               "no input of the zoned tenant left in us-east's outbox and dead letters")
    return time.monotonic() - applied


def test_input_taken_in_before_the_binding_arrived_is_gone_one_pass_after_it(world: World) -> None:
    tenant = tenant_at_placer("zwin")
    zone_while_held_back(world, tenant)
    mark = f"wmark{uuid.uuid4().hex[:12]}"
    try:
        sent = submit(tenant, "onboard", {"email": f"{mark}@example.com", "name": mark}, region=OUTSIDE,
                      config=world.unaware, resolve_home=False)
        bad = submit(tenant, "onboard", [f"{mark}bad"], region=OUTSIDE, config=world.unaware,  # type: ignore[arg-type]
                     resolve_home=False)
        wait_until(lambda: world.scalar(PLACER, "SELECT status FROM workflow_runs WHERE id = :r AND zone = 'eu'",
                                        r=sent.run_id) == "succeeded", 90, "the run done in the zone")
        # The window was open: us-east forwarded it as an unzoned tenant's, with an outbox entry...
        assert logged(world, OUTSIDE, "submit.forwarded", sent.submission_id)
        # ... which the home's receipt (by broker) ended, though neither the binding nor the run's
        # summary can reach us-east; the refusal's body waits for the binding.
        wait_until(lambda: held_input(world, mark) == {"outbox": 0, "dead_letters": 1}, RECEIPT_BOUND_S,
                   "the home's receipt to end us-east's outbox entry")
        assert logged(world, OUTSIDE, "outbox.received", sent.submission_id)
        assert not world.bound_here(OUTSIDE, tenant)
        assert world.scalar(OUTSIDE, "SELECT count(*) FROM run_summaries WHERE run_id = :r", r=sent.run_id) == 0
        assert world.scalar(OUTSIDE, "SELECT count(*) FROM dead_letters WHERE submission_id = :s",
                            s=bad.submission_id) == 1
    finally:
        world.hold_back(False)  # whatever happened: the next test needs the link
    took = release_and_time_the_scrub(world, tenant, mark)
    print(f"input gone from us-east {took:.2f}s after the binding was applied there")
    dump = world.dump(OUTSIDE)
    assert mark not in dump, "an input of zone eu is in us-east's database"
    assert str(sent.run_id) in dump  # its summary is there: the check can see the run
    assert world.scalar(OUTSIDE, "SELECT count(*) FROM dead_letters WHERE submission_id = :s AND payload IS NULL",
                        s=bad.submission_id) == 1  # the refusal's record stays, without its body
    assert mark in world.dump(PLACER)
    assert world.scalar(PLACER, "SELECT count(*) FROM workflow_runs WHERE tenant_id = :t", t=tenant) == 1


def binding_epoch(world: World, region: str, tenant: str) -> int:
    return int(world.scalar(region, "SELECT coalesce(max(epoch), 0) FROM tenant_zones WHERE tenant_id = :t AND zone = 'eu'",
                            t=tenant))


def test_tenants_zone_waits_until_every_region_applied_the_binding(world: World) -> None:
    """'regionmesh tenants zone' returns once every region holds the binding; by its deadline it
    names the regions that do not (us-east here, its link from the placer disabled), says what
    that means for a region outside the zone, and exits 1 with the binding written."""
    from click.testing import CliRunner

    from regionmesh.ops.cli import cli

    tenant = tenant_at_placer("zwait")
    args = ["--config", str(world.dev.mesh_file), "--region", PLACER, "tenants", "zone", tenant, "eu"]
    world.hold_back(True)
    try:
        began = time.monotonic()
        res = CliRunner().invoke(cli, [*args, "--wait", "3"])
        assert res.exit_code == 1, res.output
        assert time.monotonic() - began >= 3
        assert f"not applied in: {OUTSIDE} (not replicated there yet)" in res.output, res.output
        assert f"{OUTSIDE} (outside the zone) may still accept {tenant}'s submissions" in res.output.replace("\n", " ")
        assert binding_epoch(world, PLACER, tenant) == 1 and binding_epoch(world, OUTSIDE, tenant) == 0

        # Bound again (epoch 2): the command waits; us-east's link comes back only once the placer
        # has the new epoch, so the command cannot have returned before us-east applied it.
        def release() -> None:
            wait_until(lambda: binding_epoch(world, PLACER, tenant) == 2, 30, "the second binding at the placer")
            world.hold_back(False)

        releaser = threading.Thread(target=release)
        releaser.start()
        res = CliRunner().invoke(cli, [*args, "--wait", "60"])
        releaser.join(60)
    finally:
        world.hold_back(False)
    assert res.exit_code == 0, res.output
    assert f"applied in every region ({', '.join(world.config.regions)})" in res.output, res.output
    assert {r: binding_epoch(world, r, tenant) for r in REGIONS} == {r: 2 for r in REGIONS}


def test_an_unsent_entry_goes_back_to_the_broker_and_runs_in_the_zone_later(world: World) -> None:
    """Last in the module: it stops the placer's Redis. us-east cannot forward, so it keeps the
    submission unsent in its outbox; once the binding arrives the scrub hands it back to
    us-east's broker (where a zoned submission waits) and its database holds no input, and the
    run happens in the zone once the placer's broker is back."""
    tenant = tenant_at_placer("zunsent")
    zone_while_held_back(world, tenant)
    mark = f"umark{uuid.uuid4().hex[:12]}"
    redis_pid = world.dev.region(PLACER).redis.pid
    try:
        terminate(redis_pid)
        assert not pid_alive(redis_pid)
        try:
            kept = submit(tenant, "onboard", {"email": f"{mark}@example.com", "name": mark}, region=OUTSIDE,
                          config=world.unaware, resolve_home=False)
            wait_until(lambda: world.scalar(OUTSIDE, "SELECT count(*) FROM outbox WHERE run_id = :r AND sent_at IS NULL",
                                            r=kept.run_id) == 1, 30, "us-east to keep the submission unsent")
            assert held_input(world, mark)["outbox"] == 1
        finally:
            world.hold_back(False)
        release_and_time_the_scrub(world, tenant, mark)
        assert mark not in world.dump(OUTSIDE), "an input of zone eu is in us-east's database"
    finally:
        world.dev.up()  # the placer's broker back (same port, its AOF intact)
    wait_until(lambda: world.scalar(PLACER, "SELECT status FROM workflow_runs WHERE id = :r AND zone = 'eu'",
                                    r=kept.run_id) == "succeeded", 120, "the run done in the zone")
    assert mark not in world.dump(OUTSIDE)
    assert world.scalar(OUTSIDE, "SELECT count(*) FROM outbox WHERE run_id = :r", r=kept.run_id) == 0
