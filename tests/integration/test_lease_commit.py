"""A claim or completion commits only inside the lease (issue 21, item 2), against a real PostgreSQL
16: a separate session holds the task's row lock (SELECT ... FOR UPDATE, as the reconciler's
re-queue or an apply transaction would) while the region's lease runs out or is withdrawn; when the
lock goes, the claim or completion that waited behind it must not commit (migration 0021:
rm_guard_work's lock_timeout and rm_lease_at_commit's check at the commit). Before 0021 each of
these committed: rm_may_work() had been checked once, before the lock wait."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.config import Settings
from regionmesh.models import lease, runs
from regionmesh.models.engine import make_engine
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers import executor
from regionmesh.workers.definitions import Registry, Step, Workflow
from regionmesh.workers.submission import parse_submission, plan_run
from tests.conftest import Mesh
from tests.support.helpers import scalar, wait_until

REGION = "us-east"
DATABASE = "rm_lease_commit"
WORKER = "host:1"
registry = Registry()


@registry.handler("noop")
def noop(ctx: Any, payload: Any) -> Any:
    return payload


registry.register(Workflow("one", steps=(Step("only", "noop"),)))


@pytest.fixture(scope="module")
def db(mesh: Mesh) -> Iterator[Engine]:
    admin = make_engine(mesh.dev.admin_url(REGION), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine = make_engine(mesh.dev.admin_url(REGION, DATABASE), region=REGION, pool_size=3)
    try:
        command.upgrade(alembic_config(engine), "head")
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def hold_lease(engine: Engine, seconds: float) -> None:
    lease.publish_lease(engine, lease.db_now(engine) + timedelta(seconds=seconds), ["eu-west"], None)


def queued_task(engine: Engine) -> uuid.UUID:
    """A new run's only task, queued (nobody claimed it)."""
    hold_lease(engine, 3600)
    key = str(uuid.uuid4())
    sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": "one", "input": {}, "idempotency_key": key,
                            "submission_id": key, "submitted_region": REGION}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
    placed = runs.place_run(engine, run, steps, version=version)
    assert placed.status == "created"
    return placed.ready[0]


def waiting_on_lock(engine: Engine, function: str) -> bool:
    return bool(scalar(engine, """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                                   AND wait_event_type = 'Lock' AND query LIKE :q""", q=f"%{function}(%"))


def behind_a_row_lock(engine: Engine, task_id: uuid.UUID, function: str, call: Callable[[], Any],
                      meanwhile: Callable[[], None]) -> Any:
    """Run ``call`` while another session holds ``task_id``'s row lock; once ``call`` waits for
    it, run ``meanwhile`` (the lease ends), then let the lock go. Returns what ``call`` returned."""
    out: dict[str, Any] = {}
    with engine.connect() as locker:
        tx = locker.begin()
        locker.execute(text("SELECT 1 FROM step_tasks WHERE id = :t FOR UPDATE"), {"t": task_id})
        worker = threading.Thread(target=lambda: out.setdefault("result", call()))
        worker.start()
        try:
            wait_until(lambda: waiting_on_lock(engine, function) or "result" in out, 10,
                       f"{function} to wait for the row lock")
            meanwhile()
        finally:
            tx.commit()
            worker.join(30)
    assert not worker.is_alive()
    return out["result"]


def lease_runs_out(engine: Engine) -> Callable[[], None]:
    def wait() -> None:
        wait_until(lambda: scalar(engine, "SELECT held_until < clock_timestamp() FROM local_lease"), 10,
                   "the lease to end")
    return wait


def test_a_claim_that_waited_for_a_lock_past_the_end_of_the_lease_does_not_commit(db: Engine) -> None:
    task_id = queued_task(db)
    hold_lease(db, 3)  # the claim starts well inside the lease, then waits past its end
    claim = behind_a_row_lock(db, task_id, "rm_claim_task",
                              lambda: runs.claim_task(db, task_id, region=REGION, worker=WORKER), lease_runs_out(db))
    assert claim is None
    assert scalar(db, "SELECT status || '/' || attempt FROM step_tasks WHERE id = :t", t=task_id) == "queued/0"
    assert scalar(db, "SELECT count(*) FROM step_attempts WHERE task_id = :t", t=task_id) == 0


@pytest.mark.parametrize("withdraw", ["lease", "fence"])
def test_a_claim_that_waited_for_a_lock_while_the_lease_was_withdrawn_does_not_commit(db: Engine, withdraw: str) -> None:
    task_id = queued_task(db)  # an hour of lease: the lock wait is not what ends the claim

    def withdrawn() -> None:
        if withdraw == "lease":
            lease.publish_lease(db, None, [], "withdrawn by the test")
        else:
            lease.set_fence(db, True, "test", manual=True)

    try:
        claim = behind_a_row_lock(db, task_id, "rm_claim_task",
                                  lambda: runs.claim_task(db, task_id, region=REGION, worker=WORKER), withdrawn)
    finally:
        lease.set_fence(db, False, None, manual=True)
    assert claim is None
    assert scalar(db, "SELECT status || '/' || attempt FROM step_tasks WHERE id = :t", t=task_id) == "queued/0"
    assert scalar(db, "SELECT count(*) FROM step_attempts WHERE task_id = :t", t=task_id) == 0


def test_a_completion_that_waited_for_a_lock_while_the_lease_was_withdrawn_does_not_commit(db: Engine) -> None:
    task_id = queued_task(db)
    claim = runs.claim_task(db, task_id, region=REGION, worker=WORKER)
    assert claim is not None
    done = behind_a_row_lock(
        db, task_id, "rm_complete_and_claim",
        lambda: runs.complete_and_claim(db, task_id, claim.attempt, {"ok": True}, region=REGION, worker=WORKER,
                                        claim_next=True),
        lambda: lease.publish_lease(db, None, [], "withdrawn by the test"))
    assert done.discarded
    assert scalar(db, "SELECT status FROM step_tasks WHERE id = :t", t=task_id) == "running"
    hold_lease(db, 3600)
    again = runs.complete_and_claim(db, task_id, claim.attempt, {"ok": True}, region=REGION, worker=WORKER,
                                    claim_next=True)
    assert not again.discarded  # the refused completion left the task as it was: it completes now


def test_the_bound_ends_with_the_guarded_transaction(db: Engine) -> None:
    """lock_timeout and the guard's mark are transaction-local: the connection goes back to the
    pool as it was."""
    task_id = queued_task(db)
    with db.connect() as conn:
        before = conn.execute(text("SHOW lock_timeout")).scalar_one()
        conn.rollback()
        with conn.begin():
            assert conn.execute(text("SELECT rm_claim_task(:t, :r, :w, '')"),
                                {"t": task_id, "r": REGION, "w": WORKER}).scalar_one() is not None
            assert conn.execute(text("SHOW lock_timeout")).scalar_one() != before  # what is left of the lease
        assert conn.execute(text("SHOW lock_timeout")).scalar_one() == before
        assert conn.execute(text("SELECT current_setting('regionmesh.guarded', true)")).scalar() in (None, "")
    assert datetime.now(UTC) < lease.lease_row(db)["held_until"]


def runtime(engine: Engine) -> Any:
    """What the executor reads of a Runtime; publishing is a no-op (no broker here)."""
    return SimpleNamespace(engine=engine, region=REGION, worker_id=WORKER, registry=registry,
                           config=SimpleNamespace(settings=Settings()),
                           publish_steps=lambda ids, countdown=None: len(list(ids)))


def test_a_completion_refused_in_the_commit_margin_waits_for_the_renewed_lease(db: Engine) -> None:
    """Less lease left than the commit margin: rm_guard_work refuses the completion while
    rm_may_work still says the region works. The executor waits for a keeper pass to renew the
    lease, as it does for a lapsed one, instead of leaving the task to run again after its deadline."""
    task_id = queued_task(db)
    claim = runs.claim_task(db, task_id, region=REGION, worker=WORKER)
    assert claim is not None
    hold_lease(db, 0.45)  # inside the 0.5 s margin: guarded work is refused from now on
    out: dict[str, str] = {}
    running = threading.Thread(target=lambda: out.setdefault("outcome", executor.execute(runtime(db), task_id, claim)))
    running.start()
    lease_runs_out(db)()
    hold_lease(db, 3600)  # the keeper's next pass
    running.join(30)
    assert out["outcome"] == "succeeded"
    assert scalar(db, "SELECT status FROM step_tasks WHERE id = :t", t=task_id) == "succeeded"
