"""A zone added to a running mesh (issue 21, item 11), with real PostgreSQL, Redis and celery
workers in four regions brought up without zones: `regionmesh zones set` defines it while the
workers run, a tenant is bound to it and its runs happen inside the zone, their payloads reach the
zone's other region and no region outside it. A submission held because the zone's definition has
not reached a region (its link from the writer paused) says so in that worker's log and runs once
the row arrives. `dev up --zones` adds a zone and keeps it across `up`.

Before, workers read `[zones]` once, when they started: a zone added later was unknown to them, so
they held the bound tenant's submissions ("Retry in 2s") with no log line, for as long as they ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import lease_status
from regionmesh.routing.hashing import home_by_hash
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ["eu-west", "eu-central", "us-east", "ap-south"]
EU = ["eu-west", "eu-central"]
OUTSIDE = ["us-east", "ap-south"]


class World:
    def __init__(self, dev: DevMesh) -> None:
        self.dev = dev
        self.config: MeshConfig = load_config(str(dev.mesh_file))
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r)
                                           for r in REGIONS}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REGIONMESH_CONFIG=str(self.dev.mesh_file))
        return subprocess.run([sys.executable, "-m", "regionmesh", *args], capture_output=True, text=True, env=env,
                              timeout=300, check=False)

    def scalar(self, region: str, sql: str, **params: Any) -> Any:
        with self.engines[region].connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def succeeded(self, region: str, ids: list[uuid.UUID]) -> bool:
        return self.scalar(region, "SELECT count(*) FROM workflow_runs WHERE id = ANY(:i) AND status = 'succeeded'",
                           i=ids) == len(ids)

    def worker_log(self, region: str) -> str:
        return "".join(Path(w.log).read_text(encoding="utf-8", errors="replace")
                       for w in self.dev.workers(region) if w.log)

    def pause_link(self, subscriber: str, publisher: str, enabled: bool) -> None:
        subscribing.set_subscription_enabled(self.engines[subscriber], subscription_name(subscriber, publisher), enabled)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-zones-live-")
    dev = DevMesh(root)
    try:
        config = dev.up(REGIONS, workers=1, concurrency=1)  # no zones, as a mesh that started without residency
        assert config.zones == {}
        w = World(dev)
        wait_until(lambda: all(s.held for s in lease_status(w.config)), 90, "every region to hold its lease")
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        keep = bool(os.environ.get("RM_KEEP_MESH"))  # keeps logs and data to look at a failure
        leftover = down_and_leftovers(dev, root, purge=not keep)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def tenant(prefix: str) -> str:
    """Homed at eu-west by the hash over the whole mesh and over the zone (no move needed to bind it)."""
    return next(t for i in range(10_000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) == "eu-west"
                and home_by_hash(t, EU) == "eu-west")


def test_a_zone_added_while_workers_run_places_its_tenants_inside_it(world: World) -> None:
    t = tenant("live")
    # eu-central does not hear us-east, where the zone is written: the binding (written at eu-west)
    # reaches it before the zone's definition does.
    world.pause_link("eu-central", "us-east", False)
    try:
        res = world.cli("--region", "us-east", "zones", "set", "eu", "eu-west", "eu-central")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "zone eu: eu-west, eu-central" in res.stdout and "not reached" not in res.stdout, res.stdout
        wait_until(lambda: world.scalar("eu-west", "SELECT count(*) FROM zones WHERE name = 'eu'") == 1, 30,
                   "the zone at eu-west")
        res = world.cli("--region", "us-east", "tenants", "zone", t, "eu")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_until(lambda: world.scalar("eu-central", "SELECT zone FROM tenant_zones WHERE tenant_id = :t", t=t) == "eu",
                   30, "the binding at eu-central")
        assert world.scalar("eu-central", "SELECT count(*) FROM zones") == 0
        # Submitted to eu-central, which knows the binding but not the zone: held, and the log says why.
        held = submit(t, "onboard", {"email": "held@example.com", "name": "held"}, region="eu-central",
                      config=world.config, resolve_home=False).run_id
        wait_until(lambda: "submission.held_for_zone" in world.worker_log("eu-central"), 30,
                   "eu-central's worker to log why the submission waits")
        line = next(ln for ln in world.worker_log("eu-central").splitlines() if "submission.held_for_zone" in ln)
        assert f"tenant={t}" in line and "zone=eu" in line and "definition of zone eu" in line, line
        assert all(world.scalar(r, "SELECT count(*) FROM run_summaries WHERE run_id = :i", i=held) == 0
                   for r in ("eu-west", "eu-central"))
    finally:
        world.pause_link("eu-central", "us-east", True)
    # The zone's row arrives: the running worker places the held submission at once, in the zone.
    wait_until(lambda: world.succeeded("eu-west", [held]), 90, "the held submission to run at eu-west")

    # Submitted anywhere, by producers that know nothing of zones: every run inside the zone.
    mark = f"zmark{uuid.uuid4().hex[:10]}"
    runs = [submit(t, "onboard", {"email": f"{mark}{i}@example.com", "name": f"{mark}{i}"}, region=via,
                   config=world.config, resolve_home=False).run_id for i, via in enumerate(REGIONS)]
    for region in EU:  # payloads reach the zone's other region: its publications were updated
        wait_until(lambda r=region: world.succeeded(r, runs), 120, f"the zoned runs, with payloads, at {region}")
    owners = {world.scalar("eu-central", "SELECT owner_region FROM workflow_runs WHERE id = :i", i=r) for r in runs}
    assert owners <= set(EU), owners
    for region in OUTSIDE:
        wait_until(lambda r=region: world.scalar(
            r, "SELECT count(*) FROM run_summaries WHERE run_id = ANY(:i) AND status = 'succeeded'", i=runs) == len(runs),
            60, f"the runs' metadata at {region}")
        assert world.scalar(region, "SELECT count(*) FROM workflow_runs WHERE tenant_id = :t", t=t) == 0
        assert world.scalar(region, "SELECT count(*) FROM step_tasks s JOIN run_summaries r ON r.run_id = s.run_id "
                                    "WHERE r.tenant_id = :t", t=t) == 0
    listed = json.loads(world.cli("--region", "ap-south", "zones", "list", "--json").stdout)
    assert [(z["name"], z["regions"], z["bound"]) for z in listed] == [("eu", EU, 1)]
    # A zone tenants are bound to keeps its regions.
    refused = world.cli("zones", "set", "eu", "eu-west")
    assert refused.returncode == 1 and "keeps its regions" in refused.stderr, refused.stdout + refused.stderr


def test_dev_up_zones_adds_a_zone_and_keeps_it_across_up(world: World) -> None:
    root = str(world.dev.root)
    res = world.cli("dev", "up", "--dir", root, "--zones", "apac=ap-south", "--no-metrics")
    assert res.returncode == 0, res.stdout + res.stderr
    for region in REGIONS:
        wait_until(lambda r=region: world.scalar(r, "SELECT regions FROM zones WHERE name = 'apac'") == ["ap-south"],
                   30, f"zone apac at {region}")
    res = world.cli("dev", "up", "--dir", root, "--no-metrics")
    assert res.returncode == 0, res.stdout + res.stderr
    assert load_config(str(world.dev.mesh_file)).zones == {"apac": ("ap-south",)}
    t = next(x for i in range(10_000) if home_by_hash(x := f"apac-{i}", REGIONS) == "ap-south")
    res = world.cli("tenants", "zone", t, "apac")
    assert res.returncode == 0, res.stdout + res.stderr
    run = submit(t, "onboard", {"email": "a@example.com", "name": "a"}, region="us-east", config=world.config,
                 resolve_home=False).run_id
    wait_until(lambda: world.succeeded("ap-south", [run]), 90, "the apac run at ap-south")
    assert world.scalar("us-east", "SELECT count(*) FROM workflow_runs WHERE id = :i", i=run) == 0


def test_a_zone_given_to_dev_mesh_up_reaches_the_running_workers(world: World) -> None:
    """The issue's reproduction: the mesh brought up again with a new zone while its workers run
    (`DevMesh.up(zones=...)`, which does not restart them), a tenant bound to it, a submission. The
    workers read the zone from the replicated table, so the run is created in the zone."""
    zones = {z: list(m) for z, m in load_config(str(world.dev.mesh_file)).zones.items()} | {"us": ["us-east"]}
    world.dev.up(zones=zones)
    t = next(x for i in range(10_000) if home_by_hash(x := f"us-{i}", REGIONS) == "us-east")
    wait_until(lambda: world.cli("tenants", "zone", t, "us").returncode == 0, 30, "the binding to zone us")
    run = submit(t, "onboard", {"email": "u@example.com", "name": "u"}, region="ap-south", config=world.config,
                 resolve_home=False).run_id
    wait_until(lambda: world.succeeded("us-east", [run]), 60, "the run of the tenant bound to zone us, at us-east")
    assert world.scalar("ap-south", "SELECT count(*) FROM workflow_runs WHERE id = :i", i=run) == 0
