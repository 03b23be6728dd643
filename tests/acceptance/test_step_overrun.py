"""A step handler that swallows its timeout (issue 21, item 5), on real ``celery worker``
processes: its pool process is ended before the timeout plus the reconciler's slack, the attempt
counts as a timeout (retried per the step's policy, not as a lost worker), and no second attempt
starts in the region while the first still runs. The handler (regionmesh/testing/overrun.py) writes
the external ledger: ``start``, a ``tick`` every half second while it runs, ``effect`` at its end."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from regionmesh.client import submit
from regionmesh.host import pid_alive
from regionmesh.models.engine import make_engine
from regionmesh.models.registry import set_home
from regionmesh.names import steps_queue, submit_queue
from regionmesh.ops.devmesh import DEV_WORKER_TIMERS
from regionmesh.ops.devmesh.processes import metrics_dir
from regionmesh.supervisor import kill_tree, spawn
from regionmesh.testing import ledger
from tests.conftest import Mesh
from tests.support.helpers import wait_finished, wait_until

REGION = "us-east"
TENANT = "overrun"
TIMEOUT_S = 2.0  # the t_swallow steps' timeout


def worker_env(folder: Path) -> dict[str, str]:
    """The overrun workflows, the external ledger, and short reconciler timers."""
    return {
        "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows,regionmesh.testing.overrun",
        "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
        "REGIONMESH_REQUEUE_AFTER_S": "1",
        "REGIONMESH_DEADLINE_SLACK_S": "0.5",
        "RM_TEST_LEDGER": str(folder),
    }


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[tuple[Engine, Path]]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    folder = mesh.dev.root / "ledger-overrun"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    set_home(engine, TENANT, REGION, "pin", "step overrun tests")
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=worker_env(folder))
    try:
        yield engine, folder
    finally:
        for w in mesh.dev.workers(REGION):
            mesh.dev.stop_worker(REGION, w.name, kill=True)
        engine.dispose()


def lines(folder: Path, run_id: uuid.UUID) -> list[dict[str, Any]]:
    return [e for e in ledger.read(folder) if e["run"] == str(run_id)]


def assert_attempts_never_overlap(entries: list[dict[str, Any]]) -> None:
    """Every line of an attempt was written before the next attempt started (monotonic clock)."""
    starts = {e["attempt"]: e["mono"] for e in entries if e["phase"] == "start"}
    for e in entries:
        later = [a for a, at in starts.items() if a > e["attempt"] and at < e["mono"]]
        assert not later, f"attempt {e['attempt']} still ran ({e['phase']} at {e['mono']:.2f}) after attempt(s) " \
                          f"{later} started at {[round(starts[a], 2) for a in later]}"


def test_a_handler_that_swallows_its_timeout_is_ended_and_retried_per_its_policy(
        region: tuple[Engine, Path], mesh: Mesh) -> None:
    engine, folder = region
    run_id = submit(TENANT, "t_swallow", {"seconds": 25}, f"swallow-{uuid.uuid4()}", region=REGION,
                    config=mesh.config).run_id
    run = wait_finished(engine, run_id, timeout=60)
    entries = lines(folder, run_id)
    assert_attempts_never_overlap(entries)
    starts = [e for e in entries if e["phase"] == "start"]
    assert [e["attempt"] for e in starts] == [1, 2, 3], entries  # the policy's three tries, no more
    assert not [e for e in entries if e["phase"] == "effect"]  # no attempt ran to its end
    assert run["status"] == "failed" and "timed out after 2s" in run["error"], run
    for e in starts:  # each attempt ended before its timeout plus the reconciler's slack (0.5 s)
        last = max(x["mono"] for x in entries if x["attempt"] == e["attempt"])
        assert last - e["mono"] < TIMEOUT_S + 0.5, e
    # Nothing of it runs on: for a while after, the ledger does not grow.
    count = len(lines(folder, run_id))
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while time.monotonic() < deadline:
        assert len(lines(folder, run_id)) == count, "an ended attempt still writes"
        time.sleep(0.2)  # polling for something that must not happen, until the deadline


def test_a_step_with_one_attempt_that_swallows_its_timeout_runs_once(
        region: tuple[Engine, Path], mesh: Mesh) -> None:
    engine, folder = region
    run_id = submit(TENANT, "t_swallow_once", {"seconds": 25}, f"once-{uuid.uuid4()}", region=REGION,
                    config=mesh.config).run_id
    run = wait_finished(engine, run_id, timeout=60)
    assert run["status"] == "failed" and "timed out after 2s" in run["error"], run
    # Past the time a worker-lost retry (up to MIN_WORKER_LOST_TRIES) would have started a second.
    deadline = time.monotonic() + 4 * TIMEOUT_S
    while time.monotonic() < deadline:
        starts = [e for e in lines(folder, run_id) if e["phase"] == "start"]
        assert len(starts) == 1, starts
        time.sleep(0.2)  # polling for something that must not happen, until the deadline
    entries = lines(folder, run_id)
    assert not [e for e in entries if e["phase"] == "effect"]
    assert_attempts_never_overlap(entries)


def test_a_chain_run_inline_ends_at_the_step_that_overruns_and_goes_on_from_its_retry(
        region: tuple[Engine, Path], mesh: Mesh) -> None:
    """a -> b -> c, run inline by one message (the submission's): b's first attempt swallows its
    timeout and overruns. The process ends there; a is not run again by the redelivered message,
    b's retry (recorded before the end) runs in another process, and c follows it once."""
    engine, folder = region
    run_id = submit(TENANT, "t_swallow_chain", {"seconds": 25, "overrun_attempts": [1]}, f"chain-{uuid.uuid4()}",
                    region=REGION, config=mesh.config).run_id
    run = wait_finished(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    # Long enough for an attempt that still ran to show itself in the ledger.
    count = len(lines(folder, run_id))
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while time.monotonic() < deadline:
        assert len(lines(folder, run_id)) == count, "an attempt still writes after the run succeeded"
        time.sleep(0.2)  # polling for something that must not happen, until the deadline
    entries = lines(folder, run_id)
    by_step = {s: [e for e in entries if e["step"] == s] for s in ("a", "b", "c")}
    phases = {s: [(e["attempt"], e["phase"]) for e in es if e["phase"] != "tick"] for s, es in by_step.items()}
    assert phases == {"a": [(1, "start"), (1, "effect")], "b": [(1, "start"), (2, "start"), (2, "effect")],
                      "c": [(1, "start"), (1, "effect")]}, phases
    assert_attempts_never_overlap(by_step["b"])
    first_b = [e for e in by_step["b"] if e["attempt"] == 1]
    assert {e["pid"] for e in by_step["a"]} == {first_b[0]["pid"]}, "a and b's first attempt ran inline in one process"
    assert max(e["mono"] for e in first_b) - first_b[0]["mono"] < TIMEOUT_S + 0.5, first_b
    second_b = next(e for e in by_step["b"] if e["attempt"] == 2)
    assert second_b["pid"] != first_b[0]["pid"] and not pid_alive(first_b[0]["pid"]), "the overrunning process ended"
    assert by_step["c"][0]["mono"] > max(e["mono"] for e in by_step["b"]), "c ran after b's retry"


THREADS_REGION = "eu-west"
THREADS_TENANT = "overrun-threads"


@pytest.fixture
def threads_worker(region: tuple[Engine, Path], mesh: Mesh) -> Iterator[tuple[Engine, Path]]:
    """A ``celery worker -P threads`` of eu-west (the dev mesh starts prefork workers only)."""
    _, folder = region
    engine = make_engine(mesh.config.regions[THREADS_REGION].database_url, region=THREADS_REGION)
    set_home(engine, THREADS_TENANT, THREADS_REGION, "pin", "step limit in a threads pool")
    root = mesh.dev.root
    log = root / "logs" / f"worker-{THREADS_REGION}-threads.log"
    env = dict(os.environ) | DEV_WORKER_TIMERS | worker_env(folder) | {
        "REGIONMESH_CONFIG": str(mesh.dev.mesh_file), "REGIONMESH_REGION": THREADS_REGION, "PYTHONUNBUFFERED": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(root, THREADS_REGION))}
    pid = spawn([sys.executable, "-m", "celery", "-A", "regionmesh.workers.app", "worker", "-P", "threads", "-c", "2",
                 "-Q", f"{submit_queue(THREADS_REGION)},{steps_queue(THREADS_REGION)}",
                 "-n", f"{THREADS_REGION}-threads@%h", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
                log, env=env)
    try:
        wait_until(lambda: b" ready." in log.read_bytes() or not pid_alive(pid), 60, "the threads worker to start")
        assert pid_alive(pid), log.read_text(errors="replace")[-3000:]
        yield engine, folder
    finally:
        kill_tree(pid)
        engine.dispose()


def test_in_a_threads_pool_a_handler_that_swallows_its_timeout_runs_on_beside_its_retry(
        threads_worker: tuple[Engine, Path], mesh: Mesh) -> None:
    """The limit's edge (docs/explanation/limits.md, "Pools"): a threads pool has neither end, so a
    one-attempt step that overruns its 2 s timeout runs on; the reconciler re-queues it at its
    deadline plus the slack as a lost worker's, a second attempt starts beside the first, the first
    reaches its effect though its completion is refused, and the run fails as 'worker lost'."""
    engine, folder = threads_worker
    run_id = submit(THREADS_TENANT, "t_swallow_once", {"seconds": 6}, f"threads-{uuid.uuid4()}",
                    region=THREADS_REGION, config=mesh.config).run_id

    def overlapped() -> bool:
        entries = lines(folder, run_id)
        second = [e["mono"] for e in entries if e["attempt"] == 2 and e["phase"] == "start"]
        return bool(second) and any(e["attempt"] == 1 and e["mono"] > second[0] for e in entries)

    wait_until(overlapped, 30, "a second attempt to start while the first still ran")
    run = wait_finished(engine, run_id, timeout=60)
    assert run["status"] == "failed" and "worker lost" in run["error"], run
    wait_until(lambda: [e for e in lines(folder, run_id) if e["attempt"] == 1 and e["phase"] == "effect"], 30,
               "the first attempt to reach its effect")
