"""The workflow engine on real PostgreSQL 16, real Redis and real ``celery worker`` processes."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from regionmesh.broker import publisher
from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.models import runs as repo
from regionmesh.models.engine import make_engine
from regionmesh.names import RUN_STEP_TASK, SUBMIT_TASK, steps_queue, submit_queue
from regionmesh.testing import ledger
from regionmesh.testing.workflows import TEST_TABLES
from regionmesh.workers.submission import run_id_for
from tests.conftest import Mesh
from tests.support.helpers import exec_log, run_row, scalar, wait_finished, wait_until

REGION = "us-east"
REPO_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_ENV = {
    "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
    "PYTHONPATH": REPO_ROOT,
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
    "REGIONMESH_REQUEUE_AFTER_S": "1",
    "REGIONMESH_DEADLINE_SLACK_S": "0.5",
}


class Region:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.config: MeshConfig = mesh.config
        self.engine: Engine = make_engine(self.config.regions[REGION].database_url, region=REGION)
        self.ledger_dir = Path()

    def submit(self, workflow: str, data: dict[str, Any], *, tenant: str = "acme", key: str | None = None) -> uuid.UUID:
        return submit(tenant, workflow, data, key, region=REGION, config=self.config).run_id

    def run(self, workflow: str, data: dict[str, Any], timeout: float = 30, **kw: Any) -> dict[str, Any]:
        return wait_finished(self.engine, self.submit(workflow, data, **kw), timeout)

    def send_raw(self, name: str, kwargs: Any = None, args: Any = None, queue: str | None = None) -> None:
        publisher(self.config.regions[REGION].broker_url, self.config.settings).send_task(
            name, args=args, kwargs=kwargs, queue=queue or submit_queue(REGION)
        )

    def dead_letter_count(self) -> int:
        return int(scalar(self.engine, "SELECT count(*) FROM dead_letters"))


@pytest.fixture(scope="module")
def region(mesh: Mesh) -> Iterator[Region]:
    r = Region(mesh)
    r.ledger_dir = mesh.dev.root / "ledger-engine"
    r.ledger_dir.mkdir(exist_ok=True)
    os.chmod(r.ledger_dir, 0o777)
    WORKER_ENV["RM_TEST_LEDGER"] = str(r.ledger_dir)
    with r.engine.begin() as conn:
        conn.execute(text(TEST_TABLES))
    # These tests run one region's engine: keep their tenant's runs home here.
    from regionmesh.models.registry import set_home

    set_home(r.engine, "acme", REGION, "pin", "engine tests")
    mesh.dev.start_worker(REGION, concurrency=2, extra_env=WORKER_ENV)
    yield r
    for w in mesh.dev.workers(REGION):
        mesh.dev.stop_worker(REGION, w.name)
    r.engine.dispose()


def test_dag_order_and_parallel_branches(region: Region) -> None:
    run = region.run("t_diamond", {"sleep": {"b": 0.8, "c": 0.8}})
    assert run["status"] == "succeeded", run["error"]
    log = {e["step"]: e for e in exec_log(region.engine, run["id"])}
    assert sorted(log) == ["a", "b", "c", "d"]
    assert log["a"]["finished_at"] <= min(log["b"]["started_at"], log["c"]["started_at"])
    assert max(log["b"]["finished_at"], log["c"]["finished_at"]) <= log["d"]["started_at"]
    # b and c ran at the same time on the two pool processes.
    assert log["b"]["started_at"] < log["c"]["finished_at"] and log["c"]["started_at"] < log["b"]["finished_at"]
    assert run["output"]["step"] == "d"


def test_map_fan_out_gathers_in_order(region: Region) -> None:
    items = [7, 3, 5, 1, 9, 2, 8, 4, 6, 0]
    run = region.run("etl", {"items": items})
    assert run["status"] == "succeeded", run["error"]
    assert run["output"]["rows"] == [i * i for i in items]
    full = repo.get_run(region.engine, run["id"])
    assert full is not None
    transform = next(s for s in full["steps"] if s["step_key"] == "transform")
    assert transform["task_count"] == len(items)
    assert [t["idempotency_key"] for t in transform["tasks"]] == [f"{run['id']}:transform:{i}" for i in range(len(items))]


def test_map_over_empty_list_and_over_a_non_list(region: Region) -> None:
    empty = region.run("etl", {"items": []})
    assert empty["status"] == "succeeded" and empty["output"]["loaded"] == 0
    bad = region.run("t_badmap", {})
    assert bad["status"] == "failed"
    assert "maps over a.step, which is string, not a list" in bad["error"]


def test_retry_then_success(region: Region) -> None:
    run = region.run("t_flaky", {"fail_times": 2})
    assert run["status"] == "succeeded", run["error"]
    assert [e["attempt"] for e in exec_log(region.engine, run["id"])] == [1, 2, 3]
    assert run["output"]["attempt"] == 3


def test_exhausted_retries_fail_the_run_and_skip_dependents(region: Region) -> None:
    run = region.run("t_fail", {})
    assert run["status"] == "failed"
    assert "step boom failed after 2 attempt(s): RuntimeError: always fails" in run["error"]
    log = exec_log(region.engine, run["id"])
    assert [(e["step"], e["attempt"]) for e in log] == [("first", 1), ("boom", 1), ("boom", 2)]


def test_timeout(region: Region) -> None:
    run = region.run("t_timeout_ledger", {"sleep": {"slow": 5}})
    assert run["status"] == "failed"
    assert "timed out after 1s" in run["error"]
    mine = [e for e in ledger.read(region.ledger_dir) if e["run"] == str(run["id"])]
    assert [e["phase"] for e in mine] == ["start"]
    # The handler would have written its effect 5 s after it started: past that, it still has not.
    wait_until(lambda: time.time() > mine[0]["t"] + 6, 10, "the handler's own end")
    assert [e["phase"] for e in ledger.read(region.ledger_dir) if e["run"] == str(run["id"])] == ["start"]


def test_cancel_discards_running_and_never_starts_queued(region: Region) -> None:
    run_id = region.submit("t_cancel", {"seconds": 2})
    wait_until(lambda: scalar(region.engine, "SELECT count(*) FROM step_tasks WHERE run_id=:r AND status='running'", r=run_id),
               10, "the slow step to start")
    from click.testing import CliRunner

    from regionmesh.ops.cli import cli

    res = CliRunner().invoke(cli, ["--config", str(region.mesh.dev.mesh_file), "--region", REGION, "runs", "cancel", str(run_id)])
    assert res.exit_code == 0, res.output
    assert run_row(region.engine, run_id)["status"] == "cancelled"  # type: ignore[index]
    # The slow step finishes its sleep, but its result is discarded and 'later' never starts.
    wait_until(lambda: exec_log(region.engine, run_id), 10, "the slow handler to return")
    steps = {s["step_key"]: s for s in repo.get_run(region.engine, run_id)["steps"]}  # type: ignore[index]
    assert steps["slow"]["status"] == "cancelled" and steps["slow"]["output"] is None
    assert steps["later"]["status"] == "cancelled"
    assert [e["step"] for e in exec_log(region.engine, run_id)] == ["slow"]
    again = CliRunner().invoke(cli, ["--config", str(region.mesh.dev.mesh_file), "--region", REGION, "runs", "cancel", str(run_id)])
    assert again.exit_code == 1 and "it is cancelled" in str(again.exception)


def test_retry_from_failure_keeps_completed_steps(region: Region) -> None:
    run = region.run("t_retry", {})
    assert run["status"] == "failed" and "flag not set" in run["error"]
    with region.engine.begin() as conn:
        conn.execute(text("INSERT INTO test_flags VALUES (:n)"), {"n": str(run["id"])})
    from click.testing import CliRunner

    from regionmesh.ops.cli import cli

    res = CliRunner().invoke(cli, ["--config", str(region.mesh.dev.mesh_file), "--region", REGION, "runs", "retry", str(run["id"])])
    assert res.exit_code == 0, res.output
    done = wait_finished(region.engine, run["id"])
    assert done["status"] == "succeeded", done["error"]
    assert [(e["step"], e["attempt"]) for e in exec_log(region.engine, run["id"])] == [("a", 1), ("b", 1), ("b", 1), ("c", 1)]


def test_idempotent_resubmission(region: Region) -> None:
    first = region.submit("onboard", {"email": "x@example.com"}, key="signup-42")
    second = region.submit("onboard", {"email": "x@example.com"}, key="signup-42")
    assert first == second == run_id_for("acme", "signup-42")
    run = wait_finished(region.engine, first)
    assert run["status"] == "succeeded"
    assert scalar(region.engine, "SELECT count(*) FROM workflow_runs WHERE tenant_id='acme' AND idempotency_key='signup-42'") == 1
    assert scalar(region.engine, "SELECT count(*) FROM step_attempts WHERE run_id=:r", r=first) == 4
    # Different key: a second run.
    other = region.run("onboard", {"email": "x@example.com"}, key="signup-43")
    assert other["id"] != first


def test_duplicated_step_message_changes_nothing(region: Region) -> None:
    run = region.run("t_diamond", {})
    assert run["status"] == "succeeded"
    before = exec_log(region.engine, run["id"])
    task_ids = [r[0] for r in region.engine.connect().execute(text("SELECT id FROM step_tasks WHERE run_id=:r"), {"r": run["id"]})]
    for tid in task_ids:
        for _ in range(2):
            region.send_raw(RUN_STEP_TASK, kwargs={"task_id": str(tid)}, queue=steps_queue(REGION))
    # A marker run after the duplicates proves the worker consumed them (FIFO per queue, 2 processes).
    marker = region.run("t_diamond", {})
    assert marker["status"] == "succeeded"
    wait_until(lambda: scalar(region.engine, "SELECT count(*) FROM test_exec_log WHERE run_id=:r", r=marker["id"]) == 4, 10, "marker")
    assert exec_log(region.engine, run["id"]) == before
    assert run_row(region.engine, run["id"])["updated_at"] == run["updated_at"]  # type: ignore[index]


def test_a_duplicate_message_arriving_mid_execution_runs_nothing(region: Region) -> None:
    run_id = region.submit("t_effect", {"first_attempt_sleep": 3})
    task = wait_until(lambda: scalar(region.engine, "SELECT id FROM step_tasks WHERE run_id=:r AND step_key='pay' "
                                     "AND status='running'", r=run_id), 15, "the step to be running")
    for _ in range(3):  # the other pool process takes these while the first still runs the handler
        region.send_raw(RUN_STEP_TASK, kwargs={"task_id": str(task)}, queue=steps_queue(REGION))
    run = wait_finished(region.engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run["error"]
    assert [(e["step"], e["attempt"]) for e in exec_log(region.engine, run_id)] == [("pay", 1), ("after", 1)]


def test_a_backlog_is_not_republished_while_its_messages_wait(region: Region) -> None:
    import redis

    # Eight runs whose step a releases two 2 s steps: one continues inline, the other is published,
    # and with two pool processes those wait in the steps queue for seconds, far longer than the
    # reconciler's requeue age (1 s here). Republishing them would grow the queue by itself.
    ids = [region.submit("t_ledger", {"sleep": {"b": 2, "c": 2}}, key=f"backlog-{uuid.uuid4()}") for _ in range(8)]
    r = redis.Redis.from_url(region.config.regions[REGION].broker_url)
    deadline = time.monotonic() + 10
    longest = 0
    while time.monotonic() < deadline:
        longest = max(longest, int(r.llen(steps_queue(REGION))))
        time.sleep(0.1)  # sampling the queue's length: the observation itself, not a wait
    assert longest <= len(ids), f"the steps queue grew to {longest} messages for {len(ids)} tasks"
    for rid in ids:
        assert wait_finished(region.engine, rid, timeout=60)["status"] == "succeeded"


def test_a_completion_lost_to_a_database_blip_is_retried_not_rerun(region: Region) -> None:
    run_id = region.submit("t_ledger", {"sleep": {"a": 2}})
    wait_until(lambda: any(e["run"] == str(run_id) and e["step"] == "a" for e in ledger.read(region.ledger_dir)),
               15, "step a running")
    # Cut every worker connection while the handler runs: its completion meets a dead connection.
    with region.engine.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'regionmesh-%' AND pid <> pg_backend_pid()")).scalar()
    assert killed and killed > 0
    run = wait_finished(region.engine, run_id, timeout=20)  # the step's timeout is 60 s: no re-run waited for
    assert run["status"] == "succeeded", run["error"]
    effects = [e for e in ledger.read(region.ledger_dir) if e["run"] == str(run_id) and e["phase"] == "effect"]
    assert sorted(e["step"] for e in effects) == ["a", "b", "c", "d"]  # each step took effect once


def test_sigkill_of_worker_mid_step_completes_once(region: Region) -> None:
    dev = region.mesh.dev
    run_id = region.submit("t_effect", {"first_attempt_sleep": 30})
    wait_until(lambda: scalar(region.engine, "SELECT count(*) FROM test_exec_log WHERE run_id=:r", r=run_id), 15,
               "the first attempt to record its effect")
    victim = dev.workers(REGION)[0].name
    dev.stop_worker(REGION, victim, kill=True)  # SIGKILL, main process and pool
    dev.start_worker(REGION, concurrency=2, extra_env=WORKER_ENV)
    # Given back when the new worker is ready, not after the hour-long visibility timeout.
    run = wait_finished(region.engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run["error"]
    # Every execution as the handlers recorded it: the killed attempt, its one re-run, then 'after'.
    assert [(e["step"], e["attempt"]) for e in exec_log(region.engine, run_id)] == [("pay", 1), ("pay", 2), ("after", 1)]
    assert scalar(region.engine, "SELECT count(*) FROM step_tasks WHERE run_id=:r AND status='succeeded'", r=run_id) == 2


def test_sigkill_of_pool_process_is_redelivered_at_once(region: Region) -> None:
    import psutil

    run_id = region.submit("t_effect", {"first_attempt_sleep": 30})
    # Killed once its first attempt recorded its execution (then it sleeps 30 s).
    wait_until(lambda: exec_log(region.engine, run_id), 15, "the first attempt to record its execution")
    holder = scalar(region.engine, "SELECT worker FROM step_tasks WHERE run_id=:r AND status='running'", r=run_id)
    pid = int(holder.rsplit(":", 1)[1])
    psutil.Process(pid).kill()
    run = wait_finished(region.engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run["error"]
    assert [(e["step"], e["attempt"]) for e in exec_log(region.engine, run_id)] == [("pay", 1), ("pay", 2), ("after", 1)]


def test_pool_processes_killed_again_and_again_are_replaced_and_serve(region: Region) -> None:
    import psutil

    # Kill whichever pool process runs a step, five times in a row, a few seconds apart: every
    # replacement must come up (the fault campaign once saw a worker unable to start any again).
    for i in range(5):
        run_id = region.submit("t_effect", {"first_attempt_sleep": 30}, key=f"poolkill-{uuid.uuid4()}")
        holder = wait_until(lambda r=run_id: scalar(region.engine, "SELECT worker FROM step_tasks WHERE run_id=:r "
                                                   "AND status='running'", r=r), 30, f"kill {i + 1}: a step running")
        psutil.Process(int(holder.rsplit(":", 1)[1])).kill()
        assert wait_finished(region.engine, run_id, timeout=60)["status"] == "succeeded"
    fresh = [region.submit("t_diamond", {}, key=f"after-kills-{uuid.uuid4()}") for _ in range(4)]
    for rid in fresh:
        assert wait_finished(region.engine, rid, timeout=60)["status"] == "succeeded"


def test_lost_message_is_republished_by_the_reconciler(region: Region) -> None:
    # Create a run straight in PostgreSQL without publishing: as if the process died after commit.
    import regionmesh.workers.examples  # noqa: F401
    from regionmesh.routing.router import Router
    from regionmesh.workers.registry import default_registry
    from regionmesh.workers.submission import parse_submission, plan_run

    sub = parse_submission({"tenant_id": "acme", "workflow": "onboard", "input": {"email": "lost@example.com"},
                            "submission_id": str(uuid.uuid4())}, max_input_bytes=1 << 20)
    placement = Router(region.engine, [REGION]).place("acme", fresh=True)
    run, steps = plan_run(sub, default_registry, region=REGION, epoch=placement.epoch)
    placed = repo.place_run(region.engine, run, steps, version=placement.version)
    assert placed.status == "created" and placed.ready and placed.claim is None
    done = wait_finished(region.engine, sub.run_id, timeout=30)
    assert done["status"] == "succeeded"


def test_invalid_dag_is_recorded_failed_never_half_created(region: Region) -> None:
    for data, reason in (({"cycle": True}, "cycle: x -> y -> x"), ({"unknown_handler": True}, "unknown handler 't.nope'")):
        run = region.run("t_decomp", data)
        assert run["status"] == "failed" and reason in run["error"], run["error"]
        assert scalar(region.engine, "SELECT count(*) FROM workflow_steps WHERE run_id=:r", r=run["id"]) == 0
    ok = region.run("t_decomp", {})
    assert ok["status"] == "succeeded"


BAD_SUBMISSIONS = [
    ({"tenant_id": "acme", "workflow": "nope", "input": {}, "submission_id": "s-1"}, "unknown workflow 'nope'"),
    ({"tenant_id": "bad tenant!", "workflow": "onboard", "input": {}, "submission_id": "s-2"}, "must match"),
    ({"tenant_id": "x" * 129, "workflow": "onboard", "input": {}, "submission_id": "s-3"}, "must match"),
    ({"tenant_id": "acme", "workflow": "onboard", "input": [1, 2], "submission_id": "s-4"}, "input must be a JSON object"),
    ({"tenant_id": "acme", "workflow": "onboard", "input": {"blob": "x" * (1 << 20)}, "submission_id": "s-5"},
     "over the limit of 1048576 bytes"),
    ({"workflow": "onboard", "input": {}, "submission_id": "s-6"}, "missing field(s): tenant_id"),
    ({"tenant_id": "acme", "workflow": "onboard", "input": {}}, "must stamp a submission_id"),
    ({"tenant_id": "acme", "workflow": "onboard", "input": {}, "submission_id": "s-8", "v": 99}, "unsupported message version"),
]


@pytest.mark.parametrize(("kwargs", "reason"), BAD_SUBMISSIONS)
def test_bad_submission_is_dead_lettered_and_the_worker_keeps_serving(region: Region, kwargs: dict[str, Any], reason: str) -> None:
    before = region.dead_letter_count()
    region.send_raw(SUBMIT_TASK, kwargs=kwargs)
    row = wait_until(
        lambda: region.engine.connect().execute(
            text("SELECT * FROM dead_letters WHERE id > (SELECT coalesce(max(id), 0) - 1 FROM dead_letters) ORDER BY id DESC LIMIT 1")
        ).mappings().first() if region.dead_letter_count() > before else None,
        15, "a dead letter",
    )
    assert reason in row["reason"], row["reason"]
    assert row["task_name"] == SUBMIT_TASK
    # Not retried: exactly one dead letter per bad message, and the worker still serves.
    ok = region.run("onboard", {"email": "ok@example.com"})
    assert ok["status"] == "succeeded"
    assert region.dead_letter_count() == before + 1


def test_pickle_and_unknown_task_messages_are_refused_and_recorded(region: Region) -> None:
    import pickle

    before = region.dead_letter_count()
    broker = region.config.regions[REGION].broker_url
    with Connection(broker) as conn:
        producer = conn.Producer(serializer="pickle")
        producer.publish(
            pickle.dumps(((), {"tenant_id": "acme"}, {})), routing_key=submit_queue(REGION),
            content_type="application/x-python-serialize", content_encoding="binary",
            headers={"task": SUBMIT_TASK, "id": str(uuid.uuid4()), "lang": "py"}, declare=[],
        )
    region.send_raw("regionmesh.no_such_task", kwargs={"x": 1})
    wait_until(lambda: region.dead_letter_count() >= before + 2, 15, "two dead letters")
    with region.engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(text("SELECT reason FROM dead_letters ORDER BY id DESC LIMIT 2"))]
    assert any("application/json" in r for r in reasons), reasons  # the pickle message: JSON only
    assert any("unknown task name" in r for r in reasons), reasons
    ok = region.run("onboard", {"email": "still@example.com"})
    assert ok["status"] == "succeeded"


def test_runs_show_cli(region: Region) -> None:
    run = region.run("etl", {"n": 3})
    from click.testing import CliRunner

    from regionmesh.ops.cli import cli

    res = CliRunner().invoke(cli, ["--config", str(region.mesh.dev.mesh_file), "--region", REGION, "runs", "show",
                                   str(run["id"]), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert shown["status"] == "succeeded" and [s["step_key"] for s in shown["steps"]] == ["extract", "transform", "load"]
    missing = CliRunner().invoke(cli, ["--config", str(region.mesh.dev.mesh_file), "--region", REGION, "runs", "show",
                                       str(uuid.uuid4())])
    assert missing.exit_code != 0
    assert "not found in this region" in str(missing.exception)


def test_flower_requires_basic_auth_and_sees_the_worker(region: Region) -> None:
    import base64
    import urllib.error
    import urllib.request

    record = region.mesh.dev.start_flower(REGION)
    url = f"http://127.0.0.1:{record.port}/api/workers"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    assert info.value.code == 401
    password = (region.mesh.dev.root / "secrets" / "flower").read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()})

    def workers() -> dict[str, Any]:
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
            return dict(json.loads(resp.read()))

    seen = wait_until(lambda: [w for w in workers() if w.startswith(f"{REGION}-")], 30, "flower to list the worker")
    assert seen
    # It reads the broker only: its mesh file names no database or replication secret (issue 21 item 10),
    # and it sees the worker all the same.
    import psutil

    flower_file = Path(psutil.Process(record.pid).environ()["REGIONMESH_CONFIG"])
    assert flower_file != region.mesh.dev.mesh_file
    text = flower_file.read_text(encoding="utf-8")
    assert "database_password" not in text and "replication_password" not in text, text
