"""A step handler that swallows its timeout (issue 21, item 5), on real ``celery worker``
processes: its pool process is ended before the timeout plus the reconciler's slack, the attempt
counts as a timeout (retried per the step's policy, not as a lost worker), and no second attempt
starts in the region while the first still runs. The handler (regionmesh/testing/overrun.py) writes
the external ledger: ``start``, a ``tick`` every half second while it runs, ``effect`` at its end."""

from __future__ import annotations

import os
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
from regionmesh.testing import ledger
from tests.conftest import Mesh
from tests.support.helpers import wait_finished

REGION = "us-east"
TENANT = "overrun"
TIMEOUT_S = 2.0  # the t_swallow steps' timeout


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[tuple[Engine, Path]]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    folder = mesh.dev.root / "ledger-overrun"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    set_home(engine, TENANT, REGION, "pin", "step overrun tests")
    env = {
        "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows,regionmesh.testing.overrun",
        "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
        "REGIONMESH_REQUEUE_AFTER_S": "1",
        "REGIONMESH_DEADLINE_SLACK_S": "0.5",
        "RM_TEST_LEDGER": str(folder),
    }
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=env)
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
