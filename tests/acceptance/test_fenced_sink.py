"""Fencing tokens at a sink that refuses a smaller one (Kleppmann; issue 21, item 3), on real
``celery worker`` processes: a handler held while its task is handed to another execution (a
re-queue by the reconciler's rule for a lost worker, an adoption by a failover) writes after the
execution that replaced it, and the sink refuses its write because its token is smaller. The sink
and the handler are regionmesh/testing/fenced_sink.py."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from regionmesh.client import submit
from regionmesh.models import runs
from regionmesh.models.engine import make_engine
from regionmesh.models.failover import adopt_runs
from regionmesh.models.registry import set_home
from regionmesh.testing import ledger
from tests.conftest import Mesh
from tests.support.helpers import scalar, wait_finished, wait_until

REGION = "us-east"
TENANT = "fenced-sink"


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[tuple[Engine, Path]]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    folder = mesh.dev.root / "ledger-fenced"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    set_home(engine, TENANT, REGION, "pin", "fenced sink tests")
    env = {
        "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows,"
                                "regionmesh.testing.fenced_sink",
        "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
        "REGIONMESH_REQUEUE_AFTER_S": "1",
        "RM_TEST_LEDGER": str(folder),
    }
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=env)  # the held execution and its successor
    try:
        yield engine, folder
    finally:
        for w in mesh.dev.workers(REGION):
            mesh.dev.stop_worker(REGION, w.name, kill=True)
        engine.dispose()


def lines(folder: Path, run_id: uuid.UUID) -> list[dict[str, Any]]:
    return [e for e in ledger.read(folder) if e["run"] == str(run_id)]


def requeue(engine: Engine, task_id: uuid.UUID) -> None:
    """What the reconciler does to a task whose worker it finds lost (runs.requeue_expired)."""
    assert runs.requeue_expired(engine, task_id, 1)


def adopt(engine: Engine, task_id: uuid.UUID) -> None:
    """A failover's adoption (models/failover.adopt_runs), here by the same region: the run and its
    tasks move to the next epoch and the running task goes back to the queue."""
    adopted, queued = adopt_runs(engine, REGION, REGION)
    assert adopted >= 1 and task_id in queued


@pytest.mark.parametrize("hand_over", [requeue, adopt], ids=["requeue", "adoption"])
def test_a_stale_executions_late_write_is_refused_by_the_fencing_sink(
        region: tuple[Engine, Path], mesh: Mesh, hand_over: Callable[[Engine, uuid.UUID], None]) -> None:
    engine, folder = region
    name = uuid.uuid4().hex
    (folder / f"hold-{name}").touch()
    run_id = submit(TENANT, "t_fenced", {"hold": name, "sink": str(folder)}, f"fenced-{name}", region=REGION, config=mesh.config).run_id
    held = wait_until(lambda: [e for e in lines(folder, run_id) if e["phase"] == "start"], 30,
                      "the first execution to start")[0]
    assert (folder / f"holding-{name}").exists()  # that execution is the held one
    task_id = scalar(engine, "SELECT id FROM step_tasks WHERE run_id = :r", r=run_id)
    hand_over(engine, task_id)
    run = wait_finished(engine, run_id, timeout=30)  # the successor ran and completed the step
    assert run["status"] == "succeeded", run
    (folder / f"release-{name}").touch()
    late = wait_until(lambda: [e for e in lines(folder, run_id) if e["phase"] in ("effect", "refused")
                               and e["pid"] == held["pid"] and e["token"] == held["token"]], 30,
                      "the held execution's late write")[0]

    entries = lines(folder, run_id)
    effects = [e for e in entries if e["phase"] == "effect"]
    assert len(effects) == 1 and effects[0]["token"] > held["token"], entries
    assert late["phase"] == "refused", entries  # the sink kept the successor's larger token
    kept = json.loads((folder / "fence.json").read_text())
    assert int(kept[held["key"]]) == effects[0]["token"]
    assert wait_finished(engine, run_id)["output"] == {"token": str(effects[0]["token"])}  # its completion lost
