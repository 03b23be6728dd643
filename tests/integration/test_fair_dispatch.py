"""Fair dispatch's SQL on a real PostgreSQL (issue 22): the queue kept from step_tasks, the take
under the tenant's lock with its cap and rate limit, the charge in worker-seconds, bands."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.models import fairness as store
from regionmesh.models import runs
from regionmesh.models.engine import make_engine
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers import fairness
from regionmesh.workers.definitions import Registry, Step, Workflow
from regionmesh.workers.submission import parse_submission, plan_run
from tests.conftest import Mesh
from tests.integration.test_repository import hold_lease

REGION = "us-east"
DATABASE = "rm_fair_dispatch"
WORKER = "host:1"
registry = Registry()
registry.handler("noop")(lambda ctx, payload: {})
registry.register(Workflow("one", steps=(Step("only", "noop"),)))
registry.register(Workflow("two", steps=(Step("a", "noop"), Step("b", "noop", depends_on=("a",)))))


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


@pytest.fixture(autouse=True)
def clean(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text("UPDATE step_tasks SET status = 'cancelled' WHERE status IN ('queued', 'running')"))
        conn.execute(text("DELETE FROM fair_tenants"))
        conn.execute(text("UPDATE tenant_shares SET weight = 1, max_running = NULL, rate_per_s = NULL, burst = NULL"))


def place(engine: Engine, tenant: str, workflow: str = "one", priority: int | None = None) -> uuid.UUID:
    key = uuid.uuid4().hex
    sub = parse_submission({"v": 1, "tenant_id": tenant, "workflow": workflow, "input": {}, "idempotency_key": key,
                            "submission_id": key, "priority": priority}, max_input_bytes=10_000)
    run, steps = plan_run(sub, registry, region=REGION)
    if sub.priority is not None:
        store.set_run_band(engine, sub.run_id, sub.priority)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT rm_placement_version(:t)"), {"t": tenant}).scalar_one()
    assert runs.place_run(engine, run, steps, version=version).status == "created"
    return sub.run_id


def next_tenant(engine: Engine) -> store.Taken:
    """What one free worker does: choose, take, complete at once (1 ms charged)."""
    found = [fairness.Candidate.from_row(c) for c in store.candidates(engine, REGION)]
    choice = fairness.choose(found)
    for tenant in choice.order:
        got = store.take(engine, REGION, tenant, WORKER)
        if got.claim is not None:
            return got
    return store.Taken(None, choice.blocked, choice.wait_s)


def finish(engine: Engine, got: store.Taken, used_s: float = 0.001) -> None:
    assert got.claim is not None
    done = runs.complete_and_claim(engine, got.claim.task_id, got.claim.attempt, {}, region=REGION, worker=WORKER,
                                   claim_next=False)
    assert not done.discarded
    store.charge(engine, REGION, got.claim.tenant_id, used_s, got.estimate_s)


def test_queue_follows_task_status_and_a_quiet_tenant_goes_before_a_backlog(db: Engine) -> None:
    for _ in range(20):
        place(db, "flood")
    quiet = place(db, "quiet", "two")
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fair_queue WHERE region = :r"), {"r": REGION}).scalar() == 21
    order = []
    for _ in range(6):
        got = next_tenant(db)
        assert got.claim is not None
        order.append(got.claim.tenant_id)
        finish(db, got)
    # The quiet tenant's two steps (the second released mid-way) both run among the first few.
    assert order.count("quiet") == 2 and order.index("quiet") <= 1, order
    with db.connect() as conn:
        assert conn.execute(text("SELECT status FROM workflow_runs WHERE id = :r"), {"r": quiet}).scalar() == "succeeded"
        assert conn.execute(text("SELECT count(*) FROM fair_queue")).scalar() == 16


def test_weights_share_worker_seconds(db: Engine) -> None:
    store.set_shares(db, "heavy", weight=3)
    for tenant in ("heavy", "light"):
        for _ in range(60):
            place(db, tenant)
    taken: Counter[str] = Counter()
    for _ in range(40):
        got = next_tenant(db)
        assert got.claim is not None
        taken[got.claim.tenant_id] += 1
        finish(db, got, used_s=0.01)
    assert 28 <= taken["heavy"] <= 32, taken  # 3:1 of 40


def test_slow_steps_do_not_buy_a_larger_share(db: Engine) -> None:
    for tenant in ("slow", "fast"):
        for _ in range(40):
            place(db, tenant)
    used: Counter[str] = Counter()
    for _ in range(40):
        got = next_tenant(db)
        assert got.claim is not None
        cost = 0.05 if got.claim.tenant_id == "slow" else 0.01
        used[got.claim.tenant_id] += cost
        finish(db, got, used_s=cost)
    assert abs(used["slow"] - used["fast"]) <= 0.06, used  # equal worker time, not equal counts


def test_cap_counts_running_tasks_under_the_tenant_lock(db: Engine) -> None:
    store.set_shares(db, "capped", max_running=2)
    for _ in range(5):
        place(db, "capped")
    first, second = next_tenant(db), next_tenant(db)
    assert first.claim and second.claim
    third = store.take(db, REGION, "capped", WORKER)
    assert third.claim is None and third.blocked == "concurrency"
    assert next_tenant(db).blocked == "concurrency"
    finish(db, first)
    assert next_tenant(db).claim is not None


def test_rate_limit_allows_the_burst_then_one_per_period(db: Engine) -> None:
    store.set_shares(db, "rated", rate_per_s=2, burst=2)
    for _ in range(5):
        place(db, "rated")
    assert next_tenant(db).claim is not None
    assert next_tenant(db).claim is not None
    held = next_tenant(db)
    assert held.claim is None and held.blocked == "rate" and 0 < held.wait_s <= 0.5, held


def test_high_band_first_and_low_band_ages(db: Engine) -> None:
    place(db, "bulk", priority=fairness.LOW)
    place(db, "urgent", priority=fairness.HIGH)
    place(db, "plain")
    order = []
    for _ in range(3):
        got = next_tenant(db)
        assert got.claim is not None
        order.append(got.claim.tenant_id)
        finish(db, got)
    assert order == ["urgent", "plain", "bulk"]
    # Aged: a low head that waited two aging periods competes as high.
    assert fairness.effective_band(fairness.LOW, 2.0, 1.0) == fairness.HIGH
