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
from collections.abc import Iterator
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


def race(db: Engine) -> tuple[runs.Completion, dict[str, int], int]:
    """The last map task's completion (releasing and claiming d inline) waits for the run's row
    while the erasure starts; then the row lock goes. Returns the completion, the rows of the run
    left per table, and the task rows still holding its input or output."""
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
    last = threading.Thread(target=lambda: out.setdefault("completion", runs.complete_and_claim(
        db, m[1], 1, {"r": key}, region=REGION, worker=WORKER, claim_next=True)))
    erasing = threading.Thread(target=lambda: out.setdefault("removed", erasure.erase_here(
        db, tenant_hash(tenant), 1, REGION)))
    with db.connect() as locker:
        tx = locker.begin()
        me = locker.execute(text("SELECT pg_backend_pid()")).scalar_one()
        locker.execute(text("SELECT 1 FROM workflow_runs WHERE id = :r FOR UPDATE"), {"r": sub.run_id})
        last.start()
        completion = wait_until(lambda: blocked_by(db, me), 10, "the last map completion to wait for the run row")[0]
        erasing.start()
        # With the tenant's lock the erasure waits for the completion before it reads anything;
        # without it (the mutant) its step_tasks statement waits for the map task's row instead.
        wait_until(lambda: blocked_by(db, completion), 10, "the erasure to wait for the completion")
        tx.commit()
    last.join(30)
    erasing.join(30)
    left = {table: scalar(db, f"SELECT count(*) FROM {table} WHERE {column} = :r", r=sub.run_id)
            for table, column in (("step_tasks", "run_id"), ("step_attempts", "run_id"), ("workflow_steps", "run_id"),
                                  ("workflow_runs", "id"))}
    payload = scalar(db, "SELECT count(*) FROM step_tasks WHERE input::text LIKE :k OR output::text LIKE :k", k=f"%{key}%")
    return out["completion"], {t: n for t, n in left.items() if n}, payload


def test_a_completion_that_releases_a_task_during_the_erasure_leaves_nothing_behind(db: Engine) -> None:
    completion, left, payload = race(db)
    assert not completion.discarded  # it released d and claimed it, before the erasure read anything
    assert left == {} and payload == 0


def test_the_race_leaves_the_released_task_without_the_lock(db: Engine) -> None:
    """Mutant erasure_lock_dropped (bench/mutants.py), planted in this database: the same race
    leaves d's task row live, with its input, after the erasure (the hole 0022 closed)."""
    mutant = mutants.MUTANTS["erasure_lock_dropped"]
    (patch,) = mutant.sql
    with db.begin() as conn:
        correct = conn.execute(text("SELECT pg_get_functiondef(CAST(:f AS regprocedure))"),
                               {"f": patch.function}).scalar_one()
        mutants.apply_sql(conn, mutant)
    try:
        completion, left, payload = race(db)
    finally:
        with db.begin() as conn:
            conn.exec_driver_sql(correct.replace("%", "%%"))
    assert not completion.discarded
    assert left.get("step_tasks", 0) >= 1 and payload >= 1, (left, payload)
