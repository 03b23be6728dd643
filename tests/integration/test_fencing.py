"""The handler's fencing token against a real PostgreSQL 16: it grows for a task across retries,
``runs retry`` (which starts ``attempt`` over) and an adoption, and a claim that was superseded
before its handler ran gets a token below the claim that replaced it (workers/executor.py; the
claim returns its stamp and the lease, rm_claim_task since 0020). Each claim is run through the
executor with a handler that records its context."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.config import Settings
from regionmesh.models import lease, runs
from regionmesh.models.engine import make_engine
from regionmesh.models.failover import adopt_runs
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers import executor
from regionmesh.workers.definitions import Registry, RetryPolicy, Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.submission import parse_submission, plan_run
from tests.conftest import Mesh

REGION = "us-east"
DATABASE = "rm_fencing"
WORKER = "host:1"
seen: list[StepContext] = []
registry = Registry()


@registry.handler("record_and_fail")
def record_and_fail(ctx: StepContext, payload: Any) -> Any:
    seen.append(ctx)
    raise RuntimeError("fails every time")


registry.register(Workflow("twice", steps=(
    Step("only", "record_and_fail", retry=RetryPolicy(max_attempts=2, base_s=0.0, max_s=0.0)),)))


@pytest.fixture(scope="module")
def db(mesh: Mesh) -> Iterator[Engine]:
    admin = make_engine(mesh.dev.admin_url(REGION), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine = make_engine(mesh.dev.admin_url(REGION, DATABASE), region=REGION, pool_size=2)
    try:
        command.upgrade(alembic_config(engine), "head")
        lease.publish_lease(engine, datetime.now(UTC) + timedelta(hours=1), ["eu-west"], None)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def runtime(engine: Engine) -> Any:
    """What the executor reads of a Runtime; publishing is a no-op (no broker here)."""
    return SimpleNamespace(engine=engine, region=REGION, worker_id=WORKER, registry=registry,
                           config=SimpleNamespace(settings=Settings()),
                           publish_steps=lambda ids, countdown=None: len(list(ids)))


def run_once(engine: Engine, task_id: uuid.UUID) -> StepContext:
    """Claim the task and run its handler through the executor; the context the handler got."""
    claim = runs.claim_task(engine, task_id, region=REGION, worker=WORKER)
    assert claim is not None
    before = len(seen)
    executor.execute(runtime(engine), task_id, claim)
    assert len(seen) == before + 1
    return seen[-1]


def test_the_fencing_token_grows_across_retries_runs_retry_and_an_adoption(db: Engine) -> None:
    sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": "twice", "input": {}, "idempotency_key": "k1",
                            "submission_id": "k1", "submitted_region": REGION}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    with db.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
    placed = runs.place_run(db, run, steps, version=version)
    assert placed.status == "created"
    task_id = placed.ready[0]

    first = run_once(db, task_id)
    second = run_once(db, task_id)  # the policy's retry
    assert (first.attempt, second.attempt) == (1, 2)
    assert runs.run_status(db, sub.run_id) == "failed"
    assert runs.retry_run(db, sub.run_id) == [task_id]
    again = run_once(db, task_id)  # runs retry: attempt starts over, the token does not
    assert again.attempt == 1
    assert first.fencing_token < second.fencing_token < again.fencing_token
    assert {c.epoch for c in (first, second, again)} == {1}
    assert all(c.lease_until is not None and c.lease_until > datetime.now(UTC) for c in (first, second, again))

    claim = runs.claim_task(db, task_id, region=REGION, worker=WORKER)
    assert claim is not None
    adopt_runs(db, REGION, REGION)  # a failover while the claim's handler has not started: epoch 2
    stale_before = len(seen)
    executor.execute(runtime(db), task_id, claim)  # the superseded claim's handler still runs ...
    stale = seen[stale_before]
    adopted = run_once(db, task_id)  # ... and the adopter's claim outranks it
    assert adopted.epoch == 2 and stale.epoch == 1
    assert again.fencing_token < adopted.fencing_token
    assert again.fencing_token < stale.fencing_token < adopted.fencing_token
    assert stale.lease_until == claim.lease_until and stale.fencing_token == executor.fencing_token(1, claim.fence_us)


def test_runs_retry_keeps_the_attempt_history(db: Engine) -> None:
    """'runs retry' starts attempt over at 1 in the same epoch: with step_attempts ids derived from
    (task, attempt, region, epoch) alone the retried run's first claim collided with the first run's
    and ON CONFLICT DO NOTHING dropped it; since 0020 the id includes the claim's fencing stamp."""
    sub = parse_submission({"v": 1, "tenant_id": "t1", "workflow": "twice", "input": {}, "idempotency_key": "k2",
                            "submission_id": "k2", "submitted_region": REGION}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    with db.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version('t1')")).scalar_one()
    task_id = runs.place_run(db, run, steps, version=version).ready[0]
    run_once(db, task_id)
    run_once(db, task_id)
    assert runs.retry_run(db, sub.run_id) == [task_id]
    run_once(db, task_id)
    with db.connect() as conn:
        claims = conn.execute(text("SELECT count(*) FROM step_attempts WHERE task_id = :t"), {"t": task_id}).scalar()
    assert claims == 3  # attempts 1 and 2, then attempt 1 of the retried run
