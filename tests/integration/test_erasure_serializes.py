"""An erasure racing a completion (issue 21, item 8) against a real PostgreSQL 16: the last map
task's completion, which releases the next step's task and claims it inline, waits for the run's
row (another session holds it) while ``erase_here`` starts; then the lock goes. Before migration
0022 the erasure's statements had taken their snapshots and the released task and its attempt
stayed live after the erasure (no run row, no tenant id: no later sweep finds them); now the two
serialize on the tenant's lock and nothing of the run is left. tests/acceptance/test_erasure_race.py
shows the same with real workers and three regions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from bench import mutants
from regionmesh.models import erasure, lease, runs
from regionmesh.models.engine import make_engine
from regionmesh.models.residency import tenant_hash
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers.definitions import Registry, Step, Workflow
from regionmesh.workers.submission import parse_submission, plan_run
from tests.conftest import Mesh
from tests.support.helpers import scalar, wait_until

REGION = "us-east"
DATABASE = "rm_erasure_race"
WORKER = "host:1"
registry = Registry()


@registry.handler("echo")
def echo(ctx: Any, payload: Any) -> Any:
    return payload


registry.register(Workflow("fan", steps=(
    Step("a", "echo"), Step("m", "echo", depends_on=("a",), map_over="a.items"), Step("d", "echo", depends_on=("m",)))))


@pytest.fixture(scope="module")
def db(mesh: Mesh) -> Iterator[Engine]:
    admin = make_engine(mesh.dev.admin_url(REGION), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine = make_engine(mesh.dev.admin_url(REGION, DATABASE), region=REGION, pool_size=4)
    try:
        command.upgrade(alembic_config(engine), "head")
        lease.publish_lease(engine, lease.db_now(engine) + timedelta(hours=1), ["eu-west"], None)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def blocked_by(engine: Engine, pid: int) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE :p = ANY(pg_blocking_pids(pid))"),
                                 {"p": pid}).scalars())


@dataclass
class Outcome:
    completion: runs.Completion | None
    errors: dict[str, str]  # "completion" / "erasure" -> the error either raised
    left: dict[str, int]  # rows of the run left, per table
    payload: int  # task rows still holding its input or output


def race(db: Engine, *, hold: str = "run") -> Outcome:
    """The last map task's completion (it releases d and claims it inline) and the tenant's erasure,
    while a test session holds a row: ``hold="run"``, the run's row, which the completion reaches
    after it updated its task and attempt; ``hold="task"``, the map task's own row, which the
    completion needs first. The erasure starts once the completion waits, the row goes once the
    erasure waits too."""
    tenant, key = f"t{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    sub = parse_submission({"v": 1, "tenant_id": tenant, "workflow": "fan", "input": {"secret": key},
                            "idempotency_key": key, "submission_id": key, "submitted_region": REGION},
                           max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    version = scalar(db, "SELECT rm_placement_version(:t)", t=tenant)
    first = runs.place_run(db, run, steps, version=version).ready[0]
    a = runs.claim_task(db, first, region=REGION, worker=WORKER)
    assert a is not None
    m = runs.complete_and_claim(db, first, a.attempt, {"items": [key, key]}, region=REGION, worker=WORKER,
                                claim_next=False).released
    claims = [runs.claim_task(db, t, region=REGION, worker=WORKER) for t in m]
    assert all(claims)
    assert not runs.complete_and_claim(db, m[0], 1, {"r": key}, region=REGION, worker=WORKER, claim_next=False).discarded

    out: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(name: str, call: Callable[[], Any]) -> None:
        try:
            out[name] = call()
        except Exception as exc:  # a deadlock's victim, reported by the test
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"

    last = threading.Thread(target=attempt, args=("completion", lambda: runs.complete_and_claim(
        db, m[1], 1, {"r": key}, region=REGION, worker=WORKER, claim_next=True)))
    erasing = threading.Thread(target=attempt, args=("erasure", lambda: erasure.erase_here(
        db, tenant_hash(tenant), 1, REGION)))
    row = ("SELECT 1 FROM workflow_runs WHERE id = :r FOR UPDATE" if hold == "run"
           else "SELECT 1 FROM step_tasks WHERE id = :r FOR UPDATE")
    with db.connect() as locker:
        tx = locker.begin()
        me = locker.execute(text("SELECT pg_backend_pid()")).scalar_one()
        locker.execute(text(row), {"r": sub.run_id if hold == "run" else m[1]})
        last.start()
        completion = wait_until(lambda: blocked_by(db, me), 10, "the last map completion to wait for the row")[0]
        erasing.start()
        # With the tenant's lock the erasure waits for the completion before it reads anything;
        # without it, its statements reach the rows the completion or this session holds.
        wait_until(lambda: blocked_by(db, completion) or len(blocked_by(db, me)) > 1, 10, "the erasure to wait")
        tx.commit()
    last.join(30)
    erasing.join(30)
    left = {table: scalar(db, f"SELECT count(*) FROM {table} WHERE {column} = :r", r=sub.run_id)
            for table, column in (("step_tasks", "run_id"), ("step_attempts", "run_id"), ("workflow_steps", "run_id"),
                                  ("workflow_runs", "id"))}
    payload = scalar(db, "SELECT count(*) FROM step_tasks WHERE input::text LIKE :k OR output::text LIKE :k", k=f"%{key}%")
    return Outcome(out.get("completion"), errors, {t: n for t, n in left.items() if n}, payload)


@contextmanager
def planted(db: Engine, mutant: mutants.Mutant) -> Iterator[None]:
    """``mutant`` (an SQL one) installed in the test's database, the correct functions back after."""
    with db.begin() as conn:
        correct = [conn.execute(text("SELECT pg_get_functiondef(CAST(:f AS regprocedure))"), {"f": p.function}).scalar_one()
                   for p in mutant.sql]
        mutants.apply_sql(conn, mutant)
    try:
        yield
    finally:
        with db.begin() as conn:
            for definition in correct:
                conn.exec_driver_sql(definition.replace("%", "%%"))


@pytest.mark.parametrize("hold", ["run", "task"])
def test_a_completion_that_releases_a_task_during_the_erasure_leaves_nothing_behind(db: Engine, hold: str) -> None:
    got = race(db, hold=hold)
    assert got.errors == {}  # serialized: neither waits for the other in a cycle
    assert got.completion is not None and not got.completion.discarded  # it committed before the erasure read
    assert got.left == {} and got.payload == 0


def test_the_race_without_the_lock(db: Engine) -> None:
    """Mutant erasure_lock_dropped (bench/mutants.py) planted in this database. Holding the run's
    row, the race of 0022 leaves nothing now either: since 0025 a completion also ends its task's
    attempt (rm_attempt_end), a row the erasure's first statement tombstones, so the erasure waits
    for the completion there. Holding the task's row instead, the erasure tombstones the attempts
    before the completion gets its task, and the two wait for each other: PostgreSQL aborts one
    (a deadlock), which the tenant's lock prevents."""
    with planted(db, mutants.MUTANTS["erasure_lock_dropped"]):
        by_run = race(db, hold="run")
        by_task = race(db, hold="task")
    assert by_run.errors == {} and by_run.left == {} and by_run.payload == 0
    assert by_task.errors and all("deadlock" in e.lower() for e in by_task.errors.values()), by_task
