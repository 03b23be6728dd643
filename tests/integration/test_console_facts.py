"""What the console shows as facts, against real PostgreSQL 16: every way a running attempt ends is
recorded with its end and outcome (migration 0025's rm_attempt_end, on a database of its own with a
lease held by hand), the failed attempt's error text stays in step_tasks (payload), and a console
action taken in us-east's console is a replicated row that eu-west and ap-south hold (the shared
three-region mesh, lease keepers running)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.models import console as repo
from regionmesh.models import erasure, lease, runs, waits
from regionmesh.models.engine import make_engine
from regionmesh.models.failover import adopt_runs
from regionmesh.ops.console import actions, views
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers.definitions import Registry, Step, Workflow
from regionmesh.workers.submission import parse_submission, plan_run
from tests.conftest import Mesh
from tests.support.helpers import wait_until

REGION = "us-east"
DATABASE = "rm_console_facts"
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
        lease.publish_lease(engine, lease.db_now(engine) + timedelta(hours=1), ["eu-west"], None)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def new_run(engine: Engine, tenant: str = "t1") -> tuple[uuid.UUID, uuid.UUID]:
    """A new run of 'one' placed here: (run id, its only task, queued)."""
    key = str(uuid.uuid4())
    sub = parse_submission({"v": 1, "tenant_id": tenant, "workflow": "one", "input": {}, "idempotency_key": key,
                            "submission_id": key, "submitted_region": REGION}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version(:t)"), {"t": tenant}).scalar_one()
    placed = runs.place_run(engine, run, steps, version=version)
    assert placed.status == "created"
    return uuid.UUID(str(run["id"])), placed.ready[0]


def claim(engine: Engine, task_id: uuid.UUID, worker: str = WORKER, takeover: str | None = None) -> runs.Claim:
    c = runs.claim_task(engine, task_id, region=REGION, worker=worker, takeover=takeover)
    assert c is not None
    return c


def ended(engine: Engine, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """(attempt, worker, epoch, outcome, ended, error text) of each attempt, oldest first."""
    return [(a["attempt"], a["worker"], a["epoch"], a["outcome"], a["ended_at"] is not None, a["error"])
            for a in repo.run_attempts(engine, run_id)]


def test_a_completion_ends_the_attempt_as_succeeded(db: Engine) -> None:
    run_id, task = new_run(db)
    c = claim(db, task)
    assert ended(db, run_id) == [(1, WORKER, 1, None, False, None)]  # running: no end yet
    assert runs.complete_and_claim(db, task, c.attempt, {"ok": 1}, region=REGION, worker=WORKER,
                                  claim_next=False).released == []
    assert ended(db, run_id) == [(1, WORKER, 1, "succeeded", True, None)]


def test_failures_timeouts_and_lost_workers_each_end_their_attempt_with_their_text(db: Engine) -> None:
    run_id, task = new_run(db)
    c = claim(db, task)
    assert runs.fail_task(db, task, c.attempt, "ValueError: <b>bad</b> input", 0.0) == "retry"
    c = claim(db, task)
    assert runs.fail_task(db, task, c.attempt, "timed out after 1s", 0.0) == "retry"
    c = claim(db, task)
    assert runs.requeue_expired(db, task, c.attempt)  # the reconciler: deadline passed
    claim(db, task, worker="host:2")
    claim(db, task, worker="host:3", takeover="host:2")  # host:2's process is gone: taken over
    assert ended(db, run_id) == [
        (1, WORKER, 1, "failed", True, "ValueError: <b>bad</b> input"),
        (2, WORKER, 1, "timed_out", True, "timed out after 1s"),
        (3, WORKER, 1, "worker_lost", True, "worker lost (deadline passed)"),
        (4, "host:2", 1, "worker_lost", True, None),
        (5, "host:3", 1, None, False, None),
    ]
    with db.connect() as conn:  # the text is payload: in step_tasks, never in step_attempts
        cols = set(conn.execute(text("SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = 'step_attempts'")).scalars())
        errors = conn.execute(text("SELECT attempt_errors FROM step_tasks WHERE id = :t"), {"t": task}).scalar_one()
    assert "error" not in cols and len(errors) == 3
    assert runs.fail_task(db, task, 5, "RuntimeError: final", None) == "failed"
    assert ended(db, run_id)[-1] == (5, "host:3", 1, "failed", True, "RuntimeError: final")


def test_a_parked_wait_ends_its_attempt_as_parked_and_the_resumed_one_is_a_row_of_its_own(db: Engine) -> None:
    """A Sleep/WaitFor step parks (0026: back to queued until its wake time, its attempt given
    back); before 0030 that write ended the attempt as 'failed'."""
    run_id, task = new_run(db)
    c = claim(db, task)
    assert waits.park(db, task, c.attempt, wake_at=None, wait_s=0.0) is not None
    assert ended(db, run_id) == [(1, WORKER, 1, "parked", True, None)]
    wait_until(lambda: runs.claim_task(db, task, region=REGION, worker=WORKER) is not None, timeout=10,
               what="the parked task claimable once due")
    # the resumed attempt: the same number, a row of its own (the claim's stamp differs)
    assert [a[:4] for a in ended(db, run_id)] == [(1, WORKER, 1, "parked"), (1, WORKER, 1, None)]


def test_a_cancel_and_a_failover_adoption_end_running_attempts(db: Engine) -> None:
    cancelled, task = new_run(db)
    claim(db, task)
    assert runs.cancel_run(db, cancelled)
    assert [a[3] for a in ended(db, cancelled)] == ["cancelled"]
    adopted, task = new_run(db, tenant="t2")
    claim(db, task)
    n, _queued = adopt_runs(db, REGION, "eu-west")  # this copy adopts its own runs as eu-west would
    assert n >= 1
    # The old owner's attempt ends superseded, written at the run's new epoch (it wins over the old owner).
    assert ended(db, adopted) == [(1, WORKER, 2, "superseded", True, None)]


def test_erasure_removes_a_tenants_attempt_errors_and_console_actions(db: Engine) -> None:
    """Error text is payload and the audit names the tenant: ``tenants erase`` (a region's pass)
    leaves neither, while another tenant's rows stay."""
    gone, task = new_run(db, tenant="t-erase")
    c = claim(db, task)
    assert runs.fail_task(db, task, c.attempt, "ValueError: secret-ish payload", None) == "failed"
    kept, _ = new_run(db, tenant="t-keep")
    for tenant, run_id in (("t-erase", gone), ("t-keep", kept)):
        repo.record_action(db, actor="ops", action="cancel", target=str(run_id), tenant_id=tenant,
                           acted_region=REGION, outcome="refused", detail="run is not running")
    assert ended(db, gone)[0][5] == "ValueError: secret-ish payload"
    with db.connect() as conn:
        h = conn.execute(text("SELECT encode(sha256(convert_to('t-erase', 'UTF8')), 'hex')")).scalar_one()
    removed = erasure.erase_here(db, h, 1, REGION)
    assert removed["console_actions"] == 1 and removed["step_tasks"] == 1 and removed["step_attempts"] == 1
    with db.connect() as conn:
        texts = conn.execute(text("SELECT count(*) FROM step_tasks WHERE attempt_errors::text LIKE '%secret-ish%'")).scalar()
    assert texts == 0 and repo.run_attempts(db, gone) == []
    assert [a["tenant_id"] for a in repo.console_actions(db, 50) if a["tenant_id"] in ("t-erase", "t-keep")] == ["t-keep"]


def test_an_action_in_one_regions_console_is_a_fact_in_every_region(mesh: Mesh) -> None:
    engines = {r: make_engine(mesh.config.regions[r].database_url, region=r, pool_size=1)
               for r in ("us-east", "eu-west", "ap-south")}
    console = views.Console(mesh.config, engines["us-east"])
    try:
        missing = uuid.uuid4()
        done, message = actions.act(console, "cancel", missing, "ops", {})
        assert not done and str(missing) in message

        def everywhere() -> bool:
            return all(any(row["target"] == str(missing) and row["outcome"] == "refused" and row["actor"] == "ops"
                           and row["console_region"] == "us-east" and row["action"] == "cancel"
                           for row in repo.console_actions(e, 50)) for e in engines.values())

        wait_until(everywhere, 30, "the console action in every region")
        # And the audit page of another region's console lists it.
        page = views.audit_page(views.Console(mesh.config, engines["ap-south"]))
        assert any(a["target"] == str(missing) for a in page["actions"])
    finally:
        for e in engines.values():
            e.dispose()
