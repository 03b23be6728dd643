"""A claim that waited behind a row lock while its region was fenced does not start the handler
(issue 21, item 2), on a real ``celery worker``: the task is re-queued (the reconciler's rule for a
lost worker) while its first execution is held, a test session takes the task's row lock, the
task's message is published (as a worker publishes a retry; the reconciler's own publish skips a
locked row), the worker's claim waits for the lock, the region is fenced, and the lock goes. Before migration 0021 the claim, which had checked the lease before its lock wait,
committed and the handler ran while the region was fenced; now the commit is refused and the task
runs once the fence is down. The handler is regionmesh/testing/fenced_sink.py's ``t.fenced``."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.broker import publisher
from regionmesh.client import submit
from regionmesh.models import lease, runs
from regionmesh.models.engine import make_engine
from regionmesh.models.registry import set_home
from regionmesh.names import RUN_STEP_TASK, steps_queue
from regionmesh.testing import ledger
from tests.conftest import Mesh
from tests.support.helpers import scalar, wait_finished, wait_until

REGION = "us-east"
TENANT = "commit-in-lease"


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[tuple[Engine, Path]]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    folder = mesh.dev.root / "ledger-commit-in-lease"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    set_home(engine, TENANT, REGION, "pin", "commit in lease tests")
    env = {
        "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows,"
                                "regionmesh.testing.fenced_sink",
        "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
        "REGIONMESH_REQUEUE_AFTER_S": "1",
        "RM_TEST_LEDGER": str(folder),
    }
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=env)  # the held execution and the claimer
    try:
        yield engine, folder
    finally:
        lease.set_fence(engine, False, None, manual=True)
        for w in mesh.dev.workers(REGION):
            mesh.dev.stop_worker(REGION, w.name, kill=True)
        engine.dispose()


def starts(folder: Path, run_id: uuid.UUID) -> list[dict[str, Any]]:
    return [e for e in ledger.read(folder) if e["run"] == str(run_id) and e["phase"] == "start"]


def publish_step(mesh: Mesh, task_id: uuid.UUID) -> None:
    """The task's run_step message, as a worker publishes it (workers/runtime.py publish_steps)."""
    queue = steps_queue(REGION)
    publisher(mesh.config.regions[REGION].broker_url, mesh.config.settings).send_task(
        RUN_STEP_TASK, kwargs={"task_id": str(task_id)}, queue=queue, routing_key=queue, exchange="", declare=[])


def waiting_claim(engine: Engine) -> int | None:
    """The backend of a claim waiting for a lock, if one is."""
    pid = scalar(engine, """SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                             AND wait_event_type = 'Lock' AND query LIKE '%rm_claim_task(%'""")
    return None if pid is None else int(pid)


def transaction_over(engine: Engine, pid: int) -> bool:
    """Whether backend ``pid``'s transaction ended (committed or rolled back): it is idle, or gone."""
    state = scalar(engine, "SELECT state FROM pg_stat_activity WHERE pid = :p", p=pid)
    return state is None or state == "idle"


def test_a_claim_that_waited_for_a_lock_while_the_region_was_fenced_starts_no_handler(
        region: tuple[Engine, Path], mesh: Mesh) -> None:
    engine, folder = region
    name = uuid.uuid4().hex
    (folder / f"hold-{name}").touch()
    run_id = submit(TENANT, "t_fenced", {"hold": name, "sink": str(folder)}, f"lease-{name}", region=REGION,
                    config=mesh.config).run_id
    wait_until(lambda: starts(folder, run_id), 30, "the first execution to start")
    task_id = scalar(engine, "SELECT id FROM step_tasks WHERE run_id = :r", r=run_id)
    fenced_at = None
    with engine.connect() as locker:
        tx = locker.begin()
        try:
            assert runs.requeue_expired(engine, task_id, 1)
            locker.execute(text("SELECT 1 FROM step_tasks WHERE id = :t FOR UPDATE"), {"t": task_id})
            publish_step(mesh, task_id)
            claimer = wait_until(lambda: waiting_claim(engine), 30, "the worker's claim to wait for the row lock")
            lease.set_fence(engine, True, "test: withdrawn while a claim waits", manual=True)
            fenced_at = time.time()
        finally:
            tx.commit()  # the lock goes; the claim goes on with the fence up
    try:
        wait_until(lambda: transaction_over(engine, claimer), 30, "the claim's transaction to end")
        # The claim is over (committed or rolled back): its effect, if any, is in the row.
        row = scalar(engine, "SELECT status || '/' || attempt FROM step_tasks WHERE id = :t", t=task_id)
        assert row == "queued/1", f"the claim committed while the region was fenced: {row}"
    finally:
        lease.set_fence(engine, False, None, manual=True)
        unfenced_at = time.time()
        (folder / f"release-{name}").touch()
    run = wait_finished(engine, run_id, timeout=60)  # the task runs once the fence is down
    assert run["status"] == "succeeded", run
    second = [e for e in starts(folder, run_id) if e["attempt"] == 2]
    assert len(second) == 1 and second[0]["t"] >= unfenced_at > (fenced_at or 0), starts(folder, run_id)
