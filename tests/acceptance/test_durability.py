"""The durability contract (docs/explanation/durability.md), attacked with real faults on real servers.

- producer -> broker: publishes Redis acknowledged survive a SIGKILL of that Redis (AOF with
  ``appendfsync always``: a reply means the write is on disk).
- broker -> worker: a worker's main process SIGKILLed while it holds messages (in kombu's
  ``unacked``) loses none of them: the region's next worker gives them back at start.
- a message Redis lost anyway (an operator's DEL, a crash with a weaker fsync policy): a producer
  with a journal sends it again and it runs once. The test first shows the message really was
  gone, so it cannot pass by luck. (The pop window itself is closed by the broker adapter:
  tests/acceptance/test_pop_window.py.)
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import Engine, text

from regionmesh.broker import publisher
from regionmesh.client import Journal, confirm, resend_kwargs, submit
from regionmesh.models import runs
from regionmesh.models.engine import make_engine
from regionmesh.names import SUBMIT_TASK, submit_queue
from regionmesh.routing.hashing import home_by_hash
from regionmesh.supervisor import kill_tree
from regionmesh.testing.workflows import TEST_TABLES
from regionmesh.workers.submission import PROTOCOL_VERSION, run_id_for
from tests.conftest import Mesh
from tests.support.helpers import wait_until

REGION = "ap-south"
WORKER_ENV = {
    "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.3",
}


@pytest.fixture(scope="module")
def engine(mesh: Mesh) -> Iterator[Engine]:
    eng = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    with eng.begin() as conn:
        conn.execute(text(TEST_TABLES))
    yield eng
    eng.dispose()


@pytest.fixture
def broker(mesh: Mesh) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(mesh.config.regions[REGION].broker_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def no_workers(mesh: Mesh) -> Iterator[None]:
    """Whatever a test starts in REGION is stopped after it, however it ends."""
    yield
    for w in mesh.dev.workers(REGION):
        mesh.dev.stop_worker(REGION, w.name, kill=True)


def local_tenants(mesh: Mesh, prefix: str, n: int) -> list[str]:
    """Tenants homed in REGION (only REGION runs workers here: nothing is forwarded)."""
    regions = list(mesh.config.regions)
    names = (f"{prefix}-{i}" for i in range(10_000))
    return [t for t in names if home_by_hash(t, regions) == REGION][:n]


def succeeded(engine: Engine, run_ids: list[uuid.UUID]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE id = ANY(:ids) AND status = 'succeeded'"),
                                {"ids": run_ids}).scalar_one())


def queued_task_ids(client: redis.Redis, queue: str) -> set[str]:
    return {json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)}


def unacked_task_ids(client: redis.Redis) -> set[str]:
    return {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}


def test_acknowledged_publishes_survive_a_redis_sigkill(mesh: Mesh, engine: Engine, broker: redis.Redis,
                                                         no_workers: None) -> None:
    assert broker.config_get("appendfsync")["appendfsync"] == "always"
    assert not mesh.dev.workers(REGION)
    queue = submit_queue(REGION)
    tag = uuid.uuid4().hex[:8]
    tenants = local_tenants(mesh, "dur", 20)
    receipts = [submit(tenants[i % 20], "onboard", {"email": f"u{i}@example.com"}, f"dur-{tag}-{i}",
                       region=REGION, config=mesh.config, resolve_home=False) for i in range(300)]
    # Every publish above was acknowledged; the very next thing Redis gets is SIGKILL.
    redis_pid = mesh.dev.region(REGION).redis.pid
    assert redis_pid is not None
    os.kill(redis_pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(redis_pid) or psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE,
               10, "redis-server to die")
    mesh.dev.up(migrate=False)
    assert mesh.dev.region(REGION).redis.pid != redis_pid
    missing = {r.submission_id for r in receipts} - queued_task_ids(broker, queue)
    assert not missing, f"{len(missing)} acknowledged submissions lost by the Redis SIGKILL"

    mesh.dev.start_worker(REGION, concurrency=2, extra_env=WORKER_ENV)
    ids = [r.run_id for r in receipts]
    wait_until(lambda: succeeded(engine, ids) == len(ids), 90, f"all {len(ids)} runs to succeed")


def test_messages_held_by_a_killed_worker_run_after_restart(mesh: Mesh, engine: Engine, broker: redis.Redis,
                                                            no_workers: None) -> None:
    record = mesh.dev.start_worker(REGION, concurrency=1, extra_env=WORKER_ENV)
    tag = uuid.uuid4().hex[:8]
    tenant = local_tenants(mesh, "dur-held", 1)[0]
    receipts = [submit(tenant, "t_diamond", {"cfg": {"sleep": {"a": 4}}}, f"held-{tag}-{i}", region=REGION,
                       config=mesh.config, resolve_home=False) for i in range(3)]
    sids = {r.submission_id for r in receipts}
    # One submission runs its first step inline (4 s), maybe one more waits reserved: all unacked.
    held = wait_until(lambda: unacked_task_ids(broker) & sids, 30, "the worker to hold submissions")
    kill_tree(record.pid)
    mesh.dev.stop_worker(REGION, record.name)
    assert held <= unacked_task_ids(broker), "the killed worker's messages left unacked"
    ids = [r.run_id for r in receipts]
    assert succeeded(engine, ids) == 0

    mesh.dev.start_worker(REGION, concurrency=2, extra_env=WORKER_ENV)
    wait_until(lambda: not (unacked_task_ids(broker) & held) or None, 20,
               "the new worker to give back the dead worker's messages (not after the visibility timeout)")
    wait_until(lambda: succeeded(engine, ids) == len(ids), 60, "every held run to succeed")


def test_a_worker_outlives_a_redis_sigkill_and_the_messages_it_held_run(
        mesh: Mesh, engine: Engine, broker: redis.Redis, no_workers: None) -> None:
    """Redis dies under a worker holding messages not yet due (a retry's countdown, an ETA): the
    worker notices while Redis is down, so giving them back as it closes the lost connection fails,
    and Celery drops its in-memory copies. The worker must stay up (Celery 5.7 + kombu crashed it:
    broker.RecoveringChannel) and give them back once Redis answers (workers.app.restore_after_loss),
    not after the visibility timeout (an hour): every run is created and succeeds."""
    record = mesh.dev.start_worker(REGION, concurrency=1, extra_env=WORKER_ENV)
    log = record.log
    tag = uuid.uuid4().hex[:8]
    tenant = local_tenants(mesh, "dur-redis", 1)[0]
    warm = submit(tenant, "onboard", {"email": "w@example.com"}, f"rk-warm-{tag}", region=REGION,
                  config=mesh.config, resolve_home=False)
    wait_until(lambda: succeeded(engine, [warm.run_id]) == 1, 30, "a first run (the worker holds its lease)")
    producer = publisher(mesh.config.regions[REGION].broker_url, mesh.config.settings)
    later = []
    for i in range(3):
        sid = f"rk-{tag}-{i}"
        kwargs = {"v": PROTOCOL_VERSION, "tenant_id": tenant, "workflow": "onboard",
                  "input": {"email": f"{sid}@example.com"}, "idempotency_key": sid, "submission_id": sid,
                  "submitted_region": REGION}
        producer.send_task(SUBMIT_TASK, kwargs=kwargs, queue=submit_queue(REGION), routing_key=submit_queue(REGION),
                           task_id=sid, countdown=12)
        later.append(sid)
    wait_until(lambda: set(later) <= unacked_task_ids(broker), 30, "the worker to hold the not-yet-due messages")
    offset = log.stat().st_size
    redis_pid = mesh.dev.region(REGION).redis.pid
    assert redis_pid is not None
    os.kill(redis_pid, signal.SIGKILL)
    wait_until(lambda: "Connection to broker lost" in log.read_bytes()[offset:].decode(errors="replace"), 30,
               "the worker to notice, with Redis still down")
    mesh.dev.up(migrate=False)
    ids = [run_id_for(tenant, sid) for sid in later]
    wait_until(lambda: succeeded(engine, ids) == len(ids), 60, "the held runs to be created and succeed")
    assert psutil.Process(record.pid).is_running(), "the worker's main process died"
    assert "Unrecoverable error" not in log.read_bytes()[offset:].decode(errors="replace")


def test_a_message_redis_lost_is_sent_again_by_a_producer_with_a_journal(
        mesh: Mesh, engine: Engine, broker: redis.Redis, no_workers: None, tmp_path: Path) -> None:
    tenant = local_tenants(mesh, "dur-pop", 1)[0]
    queue = submit_queue(REGION)
    journal = Journal(tmp_path / "journal.jsonl")
    receipt = submit(tenant, "onboard", {"email": "p@example.com"}, f"pop-{uuid.uuid4().hex}", region=REGION,
                     config=mesh.config, resolve_home=False, journal=journal)
    assert receipt.submission_id in queued_task_ids(broker, queue)
    broker.delete(queue)  # lost after Redis acknowledged it: no worker, no region ever saw it
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=WORKER_ENV)
    assert succeeded(engine, [receipt.run_id]) == 0

    # The producer's journal: nothing held it -> sent again under a fresh submission id, same run id.
    first = confirm(journal, mesh.config, resend_after_s=0)
    assert (first.resent, first.held) == (1, 0), first
    wait_until(lambda: succeeded(engine, [receipt.run_id]) == 1, 30, "the re-sent submission to run")
    # The product's record tells the lost first publish from a delayed one: the re-send created the run.
    resent_as = resend_kwargs({"submission_id": receipt.submission_id, "idempotency_key": None}, 1)["submission_id"]
    fates = runs.submission_fates(engine, [receipt.submission_id, resent_as])
    assert fates == {receipt.submission_id: [], resent_as: [("created", receipt.run_id, REGION)]}, fates
    last = confirm(journal, mesh.config, resend_after_s=0)
    assert (last.held, last.resent, journal.pending()) == (1, 0, []), last
    with engine.connect() as conn:
        steps_run = conn.execute(text("SELECT count(*) FROM step_attempts WHERE run_id = :r"),
                                 {"r": receipt.run_id}).scalar_one()
    assert steps_run == 4, "each of onboard's 4 steps ran exactly once"


def test_journal_survives_its_process(tmp_path: Path) -> None:
    """What the producer wrote before a crash is pending again when it starts over."""
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    kwargs: dict[str, Any] = {"tenant_id": "t", "idempotency_key": None, "submission_id": "s1"}
    j.record("us-east", kwargs, at=100.0)
    j.record("us-east", kwargs | {"submission_id": "s2"}, at=101.0)
    j.settle({"s2": "held"})
    again = Journal(path)
    assert [(p.submission_id, p.first_sent, p.sends) for p in again.pending()] == [("s1", 100.0, 1)]
    again.compact()
    assert [p.submission_id for p in Journal(path).pending()] == ["s1"]


def test_a_resend_goes_out_under_a_fresh_submission_id_for_the_same_run() -> None:
    first: dict[str, Any] = {"tenant_id": "t", "idempotency_key": None, "submission_id": "s" * 128}
    again = resend_kwargs(first, 1)
    assert again["submission_id"] != first["submission_id"] and len(again["submission_id"]) <= 128
    assert again["idempotency_key"] == first["submission_id"]  # the key the first one meant: same run id
    keyed = resend_kwargs({"tenant_id": "t", "idempotency_key": "k", "submission_id": "s1"}, 2)
    assert (keyed["submission_id"], keyed["idempotency_key"]) == ("s1.r2", "k")
