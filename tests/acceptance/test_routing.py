"""Submit anywhere: runs execute only in the tenant's home region, forwarding and the outbox,
on three regions with real workers, brokers and replication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.host import pid_alive
from regionmesh.models.engine import make_engine
from regionmesh.routing.hashing import home_by_hash
from regionmesh.supervisor import terminate
from tests.conftest import Mesh
from tests.support.helpers import wait_until

REGIONS = ["us-east", "eu-west", "ap-south"]
REPO_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_ENV = {
    "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples",
    "PYTHONPATH": REPO_ROOT,
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
    "REGIONMESH_REQUEUE_AFTER_S": "5",
}


def tenant_homed_in(region: str, prefix: str = "rt") -> str:
    return next(t for i in range(10_000) if home_by_hash(t := f"{prefix}-{region}-{i}", REGIONS) == region)


class Mesh3:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.config = mesh.config
        self.engines: dict[str, Engine] = {r: make_engine(self.config.regions[r].database_url, region=r) for r in REGIONS}

    def statuses(self, region: str, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        with self.engines[region].connect() as conn:
            rows = conn.execute(text("SELECT id, status FROM workflow_runs WHERE id = ANY(:ids)"), {"ids": run_ids}).all()
        return {r[0]: r[1] for r in rows}

    def all_succeeded(self, region: str, run_ids: list[uuid.UUID]) -> bool:
        got = self.statuses(region, run_ids)
        return len(got) == len(run_ids) and set(got.values()) == {"succeeded"}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REGIONMESH_CONFIG=str(self.mesh.dev.mesh_file))
        return subprocess.run([sys.executable, "-m", "regionmesh.ops.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def mesh3(mesh: Mesh) -> Iterator[Mesh3]:
    for region in REGIONS:
        if not mesh.dev.workers(region):
            mesh.dev.start_worker(region, concurrency=2, extra_env=WORKER_ENV)
    m = Mesh3(mesh)
    yield m
    for region in REGIONS:
        for w in mesh.dev.workers(region):
            mesh.dev.stop_worker(region, w.name)
    for e in m.engines.values():
        e.dispose()


def test_runs_execute_only_in_the_home_region_and_are_visible_everywhere(mesh3: Mesh3) -> None:
    submitted: dict[uuid.UUID, str] = {}
    for home in REGIONS:
        tenant = tenant_homed_in(home)
        for via in REGIONS:
            if via == home:
                continue
            receipt = submit(tenant, "onboard", {"email": f"{via}@example.com"}, f"k-{uuid.uuid4()}",
                             region=via, config=mesh3.config)
            assert receipt.home_region == home
            submitted[receipt.run_id] = home
    ids = list(submitted)
    for region in REGIONS:
        wait_until(lambda r=region: mesh3.all_succeeded(r, ids), 60, f"every run succeeded, as {region} sees it")
    for region in REGIONS:
        with mesh3.engines[region].connect() as conn:
            rows = conn.execute(text(
                """SELECT r.id, r.owner_region, array_agg(DISTINCT a.region) FROM workflow_runs r
                     JOIN step_attempts a ON a.run_id = r.id WHERE r.id = ANY(:ids) GROUP BY r.id, r.owner_region"""
            ), {"ids": ids}).all()
        assert len(rows) == len(ids)
        for run_id, owner, attempt_regions in rows:
            assert owner == submitted[run_id]
            assert attempt_regions == [submitted[run_id]], "a step ran outside the home region"


def test_home_broker_down_fills_the_outbox_and_it_drains_once(mesh3: Mesh3) -> None:
    dev = mesh3.mesh.dev
    home, via = "ap-south", "us-east"
    tenant = tenant_homed_in(home, "outbox")
    redis_pid = dev.region(home).redis.pid
    terminate(redis_pid)
    assert not pid_alive(redis_pid)
    ids = []
    try:
        for i in range(5):
            ids.append(submit(tenant, "onboard", {"email": f"o{i}@example.com"}, f"ob-{uuid.uuid4()}",
                              region=via, config=mesh3.config).run_id)

        def outbox_depth() -> int:
            res = mesh3.cli("outbox", "--json")
            assert res.returncode == 0, res.stderr
            return int(json.loads(res.stdout)[via]["by_target"].get(home, 0))

        wait_until(lambda: outbox_depth() == 5, 30, "five submissions in us-east's outbox")
        assert mesh3.statuses(home, ids) == {}
    finally:
        dev.up()  # brings the broker back (same port, its AOF intact)
    wait_until(lambda: mesh3.all_succeeded(home, ids), 90, "the outbox to drain and the runs to finish")
    res = mesh3.cli("outbox", "--json")
    assert json.loads(res.stdout)[via]["depth"] == 0
    with mesh3.engines[home].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"), {"t": tenant}).scalar() == 5
        assert conn.execute(text("SELECT count(*) FROM step_attempts WHERE run_id = ANY(:ids)"), {"ids": ids}).scalar() == 20


def test_same_key_sent_to_all_regions_at_once_is_one_run(mesh3: Mesh3) -> None:
    tenant = tenant_homed_in("eu-west", "race")
    key = f"race-{uuid.uuid4()}"
    barrier = threading.Barrier(3)
    receipts: list[Any] = []

    def send(region: str) -> None:
        barrier.wait()
        receipts.append(submit(tenant, "onboard", {"email": "race@example.com"}, key, region=region, config=mesh3.config))

    threads = [threading.Thread(target=send, args=(r,)) for r in REGIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.run_id for r in receipts}) == 1 and len({r.submission_id for r in receipts}) == 3
    run_id = receipts[0].run_id
    wait_until(lambda: mesh3.all_succeeded("eu-west", [run_id]), 60, "the run")
    with mesh3.engines["eu-west"].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id=:t AND idempotency_key=:k"),
                            {"t": tenant, "k": key}).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM step_attempts WHERE run_id=:r"), {"r": run_id}).scalar() == 4


def test_thousand_submissions_across_fifty_tenants_each_exactly_once(mesh3: Mesh3, tmp_path: Path) -> None:
    lines = [json.dumps({"tenant_id": f"bulk-{i % 50}", "workflow": "onboard", "input": {"email": f"u{i}@example.com"}})
             for i in range(1000)]
    lines.insert(500, "{not json")
    lines.insert(10, json.dumps({"tenant_id": "bad tenant", "workflow": "onboard", "input": {}}))
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    res = mesh3.cli("submit-batch", str(batch), "--region", "us-east", "--wait", "180")
    assert res.returncode == 1, res.stdout + res.stderr  # two bad lines
    assert "1000 submitted" in res.stdout and "2 failed" in res.stdout
    assert "line 11" in res.stdout and "line 502" in res.stdout
    assert "finished 1000/1000: succeeded=1000" in res.stdout, res.stdout
    for region in REGIONS:
        assert region in res.stdout  # the summary per home region
    # Resumable: the same file again creates nothing new.
    again = mesh3.cli("submit-batch", str(batch), "--region", "us-east", "--wait", "60")
    assert "finished 1000/1000: succeeded=1000" in again.stdout, again.stdout
    with mesh3.engines["us-east"].connect() as conn:
        runs = conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id LIKE 'bulk-%'")).scalar()
        per_run = conn.execute(text(
            """SELECT count(*) FROM (SELECT a.run_id FROM step_attempts a JOIN workflow_runs r ON r.id = a.run_id
                WHERE r.tenant_id LIKE 'bulk-%' GROUP BY a.run_id HAVING count(*) <> 4) x""")).scalar()
        owners = conn.execute(text(
            "SELECT DISTINCT tenant_id, owner_region FROM workflow_runs WHERE tenant_id LIKE 'bulk-%'")).all()
    assert runs == 1000 and per_run == 0
    assert len(owners) == 50 and all(owner == home_by_hash(tenant, REGIONS) for tenant, owner in owners)


def test_route_pin_unpin(mesh3: Mesh3) -> None:
    tenant = tenant_homed_in("us-east", "pin")
    res = mesh3.cli("--region", "eu-west", "route", tenant, "--json")
    assert json.loads(res.stdout)["home"] == "us-east" and json.loads(res.stdout)["reason"] == "hash"
    assert mesh3.cli("--region", "eu-west", "tenants", "pin", tenant, "ap-south", "--note", "residency").returncode == 0

    def routed() -> dict[str, Any] | None:
        out = json.loads(mesh3.cli("--region", "us-east", "route", tenant, "--json").stdout)
        return out if out["home"] == "ap-south" else None

    out = wait_until(routed, 30, "the pin to replicate to us-east")
    assert out["reason"] == "pin" and out["epoch"] == 1
    receipt = submit(tenant, "onboard", {"email": "p@example.com"}, None, region="us-east", config=mesh3.config)
    wait_until(lambda: mesh3.all_succeeded("ap-south", [receipt.run_id]), 60, "the pinned run in ap-south")
    assert mesh3.cli("--region", "us-east", "tenants", "unpin", tenant).returncode == 0
    out = json.loads(mesh3.cli("--region", "us-east", "route", tenant, "--json").stdout)
    assert out["home"] == "us-east" and out["reason"] == "hash" and out["epoch"] == 2


def test_metrics_scraped_from_a_live_mesh(mesh3: Mesh3) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def scrape(region: str) -> dict[str, Any]:
        port = mesh3.mesh.dev.start_metrics(region).port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        return {f.name: f for f in text_string_to_metric_families(body)}

    # Work that the step histogram must show.
    ids = [submit(tenant_homed_in(r, "metrics"), "etl", {"n": 3}, None, region=r, config=mesh3.config).run_id for r in REGIONS]
    # One forwarded by us-east in this test itself, for the forward latency histogram.
    ids.append(submit(tenant_homed_in("eu-west", "metrics-fwd"), "etl", {"n": 3}, None, region="us-east",
                      config=mesh3.config).run_id)
    for r in REGIONS:
        wait_until(lambda r=r: mesh3.all_succeeded(r, ids), 60, "the runs")
    for region in REGIONS:
        fam = scrape(region)
        def samples(name: str, fam: dict[str, Any] = fam) -> list[Any]:
            return list(fam[name].samples)
        peers = {p for p in REGIONS if p != region}
        assert {s.labels["from"] for s in samples("regionmesh_replication_lag_seconds")} == peers
        assert all(s.labels["to"] == region for s in samples("regionmesh_replication_lag_seconds"))
        assert {(s.labels["from"], s.value) for s in samples("regionmesh_replication_subscription_up")} == {(p, 1.0) for p in peers}
        assert {s.labels["to"] for s in samples("regionmesh_replication_lag_bytes")} == peers
        assert {s.labels["wal_status"] for s in samples("regionmesh_replication_slot_status")} <= {"reserved", "extended"}
        assert {s.name for s in samples("regionmesh_replication_apply_errors")} == {"regionmesh_replication_apply_errors_total"}
        assert samples("regionmesh_outbox_depth")[0].value == 0
        assert {s.labels["queue"] for s in samples("regionmesh_queue_depth")} == {f"rm.{region}.submit", f"rm.{region}.steps"}
        runs = {s.labels["status"]: s.value for s in samples("regionmesh_runs")}
        assert runs["succeeded"] >= 1 and set(runs) == {"running", "succeeded", "failed", "cancelled"}
        steps = [s for s in samples("regionmesh_step_duration_seconds") if s.name.endswith("_count") and s.labels["region"] == region]
        assert sum(s.value for s in steps) >= 5  # etl: extract, 3 transforms, load
        assert {s.labels["part"]: s.value for s in samples("regionmesh_up")} == {"postgres": 1.0, "redis": 1.0}
        assert samples("regionmesh_fenced")[0].value == 0
    forwarded = scrape("us-east")["regionmesh_forward_latency_seconds"]
    assert any(s.name.endswith("_count") and s.value > 0 for s in forwarded.samples)
