"""An erasure racing a completion (issue 21, item 8), on a real ``celery worker`` and three regions:
the last map task of a run completes while ``tenants erase`` runs. A test session holds the run's
row lock so that the completion, which will release (and claim inline) the next step's task,
waits inside its transaction; the erasure starts and waits for the completion; then the lock goes.
Before migration 0022 the erasure's tombstone statements had already taken their snapshots, so the
task the completion inserted stayed live, with its input, in every region, after the receipt was
confirmed. Now completions of a tenant's runs and its erasure serialize on one lock per tenant,
and after the confirmed receipt no database of the mesh holds the tenant id, its input or its run
id (pg_dump of each)."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.models.engine import make_engine
from regionmesh.models.registry import set_home
from regionmesh.ops.devmesh import DATABASE
from regionmesh.replication import erasure
from tests.conftest import Mesh
from tests.support.helpers import scalar, wait_until

REGION = "us-east"


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[Engine]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    env = {
        "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows,"
                                "regionmesh.testing.slow_map",
        "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
        "REGIONMESH_REQUEUE_AFTER_S": "1",
    }
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=env)  # the two map tasks side by side
    try:
        yield engine
    finally:
        for w in mesh.dev.workers(REGION):
            mesh.dev.stop_worker(REGION, w.name, kill=True)
        engine.dispose()


def blocked_by(engine: Engine, pid: int) -> list[int]:
    """The backends waiting for a lock ``pid`` holds."""
    return list(scalar_list(engine, "SELECT pid FROM pg_stat_activity WHERE :p = ANY(pg_blocking_pids(pid))", p=pid))


def scalar_list(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).scalars())


def holding(mesh: Mesh, markers: tuple[str, ...]) -> list[str]:
    """Per region, the tables of its pg_dump (data only, local tables included) holding a marker."""
    found = []
    for name in mesh.config.regions:
        dump = subprocess.run([str(mesh.dev.pg_bindir / "pg_dump"), "--data-only", "-d",
                               mesh.dev.admin_url(name, DATABASE)],
                              capture_output=True, text=True, timeout=120, check=True).stdout
        table = "?"
        for line in dump.splitlines():
            if line.startswith("COPY "):
                table = line.split()[1]
            elif any(m in line for m in markers):
                found.append(f"{name} {table}: {line[:200]}")
    return found


def test_map_tasks_completing_during_an_erasure_leave_nothing_of_the_tenant(region: Engine, mesh: Mesh) -> None:
    engine = region
    tenant = f"erace{uuid.uuid4().hex[:12]}"
    marker = f"emark{uuid.uuid4().hex[:12]}"
    set_home(engine, tenant, REGION, "pin", "erasure race test")
    items = [{"seconds": 4, "marker": marker}, {"seconds": 4, "marker": marker}]
    run_id = submit(tenant, "t_slow_map", {"items": items}, f"race-{marker}", region=REGION,
                    config=mesh.config).run_id
    wait_until(lambda: scalar(engine, "SELECT count(*) FROM step_tasks WHERE run_id = :r AND step_key = 'm' "
                                      "AND status = 'running'", r=run_id) == 2, 30, "both map tasks to run")
    out: dict[str, Any] = {}
    erasing = threading.Thread(target=lambda: out.setdefault("status", erasure.erase(mesh.config, tenant, REGION)))
    with engine.connect() as locker:
        tx = locker.begin()
        try:
            me = locker.execute(text("SELECT pg_backend_pid()")).scalar_one()
            locker.execute(text("SELECT 1 FROM workflow_runs WHERE id = :r FOR UPDATE"), {"r": run_id})
            # The last map task's completion (the one that releases d) waits for the run's row.
            completion = wait_until(lambda: blocked_by(engine, me), 30, "the last map completion to wait")[0]
            erasing.start()
            wait_until(lambda: blocked_by(engine, completion), 60, "the erasure to meet the completion")
        finally:
            tx.commit()  # the completion goes on, inside the erasure
    erasing.join(120)
    assert not erasing.is_alive()
    status = out["status"]
    assert status.complete and not status.unreachable, status.as_dict()  # every region confirmed
    markers = (tenant, marker, str(run_id))
    left: list[str] = []

    def nothing_left() -> bool:
        left[:] = holding(mesh, markers)
        return not left

    try:
        wait_until(nothing_left, 60, "no region to hold anything of the erased tenant")
    except AssertionError:
        raise AssertionError(f"after the confirmed receipt the mesh still holds the tenant: {left}") from None
