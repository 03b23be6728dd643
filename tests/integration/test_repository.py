"""The repository against a real PostgreSQL 16: the engine's state machine as workers call it
(models/runs.py, models/failover.py, models/lease.py), in a database of its own migrated to head.
No worker runs here; each test drives the functions and reads the rows."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.models import lease, outbox, runs
from regionmesh.models.engine import make_engine
from regionmesh.models.failover import adopt_runs
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers.definitions import Registry, RetryPolicy, Step, Workflow
from regionmesh.workers.submission import parse_submission, plan_run
from tests.conftest import Mesh

REGION = "us-east"
DATABASE = "rm_repository"
registry = Registry()
registry.handler("noop")(lambda ctx, payload: {})
# a -> (b, c) -> d, and a step that may fail twice.
registry.register(Workflow("diamond", steps=(
    Step("a", "noop"), Step("b", "noop", depends_on=("a",)), Step("c", "noop", depends_on=("a",)),
    Step("d", "noop", depends_on=("b", "c")),
)))
registry.register(Workflow("flaky", steps=(Step("only", "noop", retry=RetryPolicy(max_attempts=2)),)))
WORKER = "host:1"


@pytest.fixture(scope="module")
def db(mesh: Mesh) -> Iterator[Engine]:
    admin = make_engine(mesh.dev.admin_url(REGION), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine = make_engine(mesh.dev.admin_url(REGION, DATABASE), region=REGION, pool_size=2)
    try:
        command.upgrade(alembic_config(engine), "head")
        hold_lease(engine, True)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def hold_lease(engine: Engine, held: bool) -> None:
    until = datetime.now(UTC) + timedelta(hours=1) if held else None
    lease.publish_lease(engine, until, ["eu-west"] if held else [], None if held else "test: no lease")


def place(engine: Engine, workflow: str, key: str | None = None) -> tuple[uuid.UUID, list[uuid.UUID]]:
    key = key or uuid.uuid4().hex
    sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": workflow, "input": {}, "idempotency_key": key,
                            "submission_id": key, "submitted_region": REGION}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
    placed = runs.place_run(engine, run, steps, version=version)
    assert placed.status == "created", placed
    return sub.run_id, placed.ready


def task(engine: Engine, run_id: uuid.UUID, step: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, status, attempt, epoch, worker FROM step_tasks WHERE run_id = :r AND step_key = :s"),
                           {"r": run_id, "s": step}).mappings().one()
    return dict(row)


def run_and_complete(engine: Engine, task_id: uuid.UUID) -> runs.Completion:
    claim = runs.claim_task(engine, task_id, region=REGION, worker=WORKER)
    assert claim is not None
    return runs.complete_and_claim(engine, task_id, claim.attempt, {"ok": 1}, region=REGION, worker=WORKER,
                                   claim_next=False)


def test_a_diamond_runs_to_success_each_step_released_once(db: Engine) -> None:
    run_id, ready = place(db, "diamond")
    assert ready == [task(db, run_id, "a")["id"]]
    released = run_and_complete(db, ready[0]).released
    assert sorted(released) == sorted([task(db, run_id, "b")["id"], task(db, run_id, "c")["id"]])
    assert run_and_complete(db, task(db, run_id, "b")["id"]).released == []  # d still waits for c
    assert run_and_complete(db, task(db, run_id, "c")["id"]).released == [task(db, run_id, "d")["id"]]
    run_and_complete(db, task(db, run_id, "d")["id"])
    assert runs.run_status(db, run_id) == "succeeded"


def test_a_second_placement_of_the_same_key_is_a_duplicate(db: Engine) -> None:
    key = uuid.uuid4().hex
    place(db, "diamond", key)
    sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": "diamond", "input": {}, "idempotency_key": key,
                            "submission_id": key, "submitted_region": REGION}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    with db.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
    assert runs.place_run(db, run, steps, version=version).status == "duplicate"


def test_a_completion_counts_once_and_a_stale_attempt_is_discarded(db: Engine) -> None:
    run_id, ready = place(db, "flaky")
    first = runs.claim_task(db, ready[0], region=REGION, worker=WORKER)
    assert first is not None and runs.claim_task(db, ready[0], region=REGION, worker="host:2") is None  # held
    assert runs.fail_task(db, ready[0], first.attempt, "boom", 0.0) == "retry"
    second = runs.claim_task(db, ready[0], region=REGION, worker=WORKER)
    assert second is not None and second.attempt == first.attempt + 1
    stale = runs.complete_and_claim(db, ready[0], first.attempt, {}, region=REGION, worker=WORKER, claim_next=False)
    assert stale.discarded  # the first attempt's late completion changes nothing
    assert not runs.complete_and_claim(db, ready[0], second.attempt, {}, region=REGION, worker=WORKER,
                                       claim_next=False).discarded
    assert runs.run_status(db, run_id) == "succeeded"


def test_a_running_task_past_its_deadline_goes_to_another_worker_only_through_the_reconciler(db: Engine) -> None:
    _, ready = place(db, "flaky")
    claim = runs.claim_task(db, ready[0], region=REGION, worker=WORKER)
    assert claim is not None
    with db.begin() as conn:  # as after a forward step of the database's clock
        conn.execute(text("UPDATE step_tasks SET deadline_at = clock_timestamp() - interval '1 hour' WHERE id = :t"),
                     {"t": ready[0]})
    assert runs.claim_task(db, ready[0], region=REGION, worker="host:2") is None  # a second message: no
    assert runs.claim_task(db, ready[0], region=REGION, worker="host:2", takeover=WORKER) is not None  # dead holder


def test_requeue_of_an_expired_task_is_guarded_by_its_attempt(db: Engine) -> None:
    _, ready = place(db, "flaky")
    claim = runs.claim_task(db, ready[0], region=REGION, worker=WORKER)
    assert claim is not None
    assert not runs.requeue_expired(db, ready[0], claim.attempt + 1)  # another attempt's: no
    assert runs.requeue_expired(db, ready[0], claim.attempt)
    assert not runs.requeue_expired(db, ready[0], claim.attempt)  # already queued: a lost race, no error


def test_without_a_lease_nothing_is_created_claimed_or_completed(db: Engine) -> None:
    run_id, ready = place(db, "flaky")
    claim = runs.claim_task(db, ready[0], region=REGION, worker=WORKER)
    assert claim is not None
    hold_lease(db, False)
    try:
        assert runs.complete_and_claim(db, ready[0], claim.attempt, {}, region=REGION, worker=WORKER,
                                       claim_next=False).discarded
        sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": "flaky", "input": {}, "idempotency_key": "nl",
                                "submission_id": "nl", "submitted_region": REGION}, max_input_bytes=10_000)
        run, steps = plan_run(sub, registry, region=REGION)
        with db.connect() as conn:
            version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
        assert runs.place_run(db, run, steps, version=version).status == "no_lease"
    finally:
        hold_lease(db, True)
    assert task(db, run_id, "only")["status"] == "running"  # the refused completion left it as it was


@pytest.mark.parametrize("stale_status", ["running", "succeeded"])
def test_a_task_row_of_the_old_epoch_arriving_after_adoption_is_replaced_when_its_step_is_released(
        db: Engine, stale_status: str) -> None:
    """Found by the campaign (seed 12): the old owner completed c and claimed d in one transaction
    just before it was killed; that transaction reached the heir only after the heir had adopted
    the run. c's completion lost to the heir's newer epoch (right), d's task row was inserted at the
    old epoch (no row of its key was there), and when the heir completed c itself, its release of d
    met that row and did nothing: d could never be claimed and the run waited forever."""
    run_id, ready = place(db, "diamond")
    run_and_complete(db, ready[0])
    run_and_complete(db, task(db, run_id, "b")["id"])
    assert adopt_runs(db, REGION, REGION)[0] >= 1  # the failover: every row held here moves to epoch 2
    d_id = uuid.UUID(hashlib.md5(f"{run_id}:d".encode()).hexdigest())
    with db.begin() as conn:  # the old owner's row, as the apply worker inserts it
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(
            """INSERT INTO step_tasks (id, run_id, step_id, step_key, idempotency_key, status, attempt, worker,
                                       executed_region, epoch, origin_region, updated_at, queued_at, started_at,
                                       deadline_at)
               SELECT :id, :r, s.id, 'd', :key, :status, 3, 'old-owner:9', 'eu-west', 1, 'eu-west',
                      clock_timestamp(), clock_timestamp(), clock_timestamp(), clock_timestamp() + interval '60 s'
                 FROM workflow_steps s WHERE s.run_id = :r AND s.step_key = 'd'"""),
                     {"id": d_id, "r": run_id, "key": f"{run_id}:d", "status": stale_status})
    assert task(db, run_id, "d")["epoch"] == 1
    released = run_and_complete(db, task(db, run_id, "c")["id"]).released
    assert released == [d_id]
    d = task(db, run_id, "d")  # a fresh task of this epoch: the old owner's attempts count for nothing
    assert (d["status"], d["epoch"], d["worker"], d["attempt"]) == ("queued", 2, None, 0)
    run_and_complete(db, d_id)
    assert runs.run_status(db, run_id) == "succeeded"


def test_a_later_submission_of_a_key_is_recorded_as_a_duplicate_of_its_run_once(db: Engine) -> None:
    key = uuid.uuid4().hex
    run_id, _ = place(db, "diamond", key)  # created by submission `key`

    def again(submission_id: str) -> str:
        sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": "diamond", "input": {}, "idempotency_key": key,
                                "submission_id": submission_id, "submitted_region": REGION}, max_input_bytes=10_000)
        run, steps = plan_run(sub, registry, region=REGION)
        with db.connect() as conn:
            version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
        return runs.place_run(db, run, steps, version=version).status

    assert again("resend-1") == "duplicate"
    assert again("resend-1") == "duplicate"  # a transport redelivery of the re-send: still one record
    assert again(key) == "duplicate"  # the creating submission delivered again: it created the run
    fates = runs.submission_fates(db, ["resend-1", key, "never-seen"])
    assert fates["resend-1"] == [("duplicate", run_id, REGION)]
    assert fates[key] == [("created", run_id, REGION)]
    assert fates["never-seen"] == []


def test_a_resend_absorbed_by_a_kept_outbox_entry_is_recorded_under_its_own_id(db: Engine) -> None:
    # A producer's re-send reaches a region whose outbox already keeps the run (the first publish,
    # forwarded while the home's broker was away): the entry is not kept twice, and the re-send
    # gets a durable outcome under its own submission id (the campaign's checker lost such re-sends).
    run_id = uuid.uuid4()
    message = {"v": 1, "tenant_id": "t-out", "workflow": "diamond", "input": {}, "idempotency_key": "k"}
    assert outbox.put(db, submission_id="first", run_id=run_id, target_region="eu-west", task_name="t",
                      payload=message | {"submission_id": "first"}, error="down", sent=False)
    assert not outbox.put(db, submission_id="first.r1", run_id=run_id, target_region="eu-west", task_name="t",
                          payload=message | {"submission_id": "first.r1"}, error="down", sent=False)
    # The same submission delivered again is neither kept twice nor its own duplicate.
    assert not outbox.put(db, submission_id="first", run_id=run_id, target_region="eu-west", task_name="t",
                          payload=message | {"submission_id": "first"}, error="down", sent=False)
    with db.connect() as conn:
        rows = conn.execute(text("SELECT submission_id, tenant_id, region FROM duplicate_submissions "
                                 "WHERE run_id = :r"), {"r": run_id}).all()
    assert [tuple(r) for r in rows] == [("first.r1", "t-out", REGION)]
