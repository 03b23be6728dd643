"""Workflows and handlers used by the engine tests (loaded by real workers via
REGIONMESH_WORKFLOWS). Handlers write to local test tables so tests can see
how often each step really ran (test_exec_log) and what effect it left (test_effects)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from celery import current_task
from sqlalchemy import text

from regionmesh.workers.definitions import RetryPolicy, Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.registry import default_registry as registry
from regionmesh.workers.waits import Sleep, WaitFor

TEST_TABLES = """
CREATE TABLE IF NOT EXISTS test_exec_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id uuid, step text, idx int, attempt int,
  region text, started_at timestamptz, finished_at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS test_effects (idempotency_key text PRIMARY KEY, run_id uuid, step text);
CREATE TABLE IF NOT EXISTS test_flags (name text PRIMARY KEY);
"""


def _cfg(payload: Any) -> dict[str, Any]:
    if isinstance(payload, Mapping):
        if "cfg" in payload:
            return dict(payload["cfg"])
        for value in payload.values():
            if isinstance(value, Mapping) and "cfg" in value:
                return dict(value["cfg"])
        return dict(payload)
    return {}


def _log(ctx: StepContext, started: float) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(
            text("""INSERT INTO test_exec_log (run_id, step, idx, attempt, region, started_at)
                    VALUES (:r, :s, :i, :a, :g, to_timestamp(:t))"""),
            {"r": ctx.run_id, "s": ctx.step, "i": ctx.index, "a": ctx.attempt, "g": ctx.region, "t": started},
        )


@registry.handler("t.record")
def record(ctx: StepContext, payload: Any) -> dict[str, Any]:
    started = time.time()
    cfg = _cfg(payload)
    time.sleep(float(cfg.get("sleep", {}).get(ctx.step, 0)))
    _log(ctx, started)
    return {"cfg": cfg, "step": ctx.step}


@registry.handler("t.effect")
def effect(ctx: StepContext, payload: Any) -> dict[str, Any]:
    started = time.time()
    cfg = _cfg(payload)
    with ctx.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO test_effects VALUES (:k, :r, :s) ON CONFLICT (idempotency_key) DO NOTHING"),
            {"k": ctx.idempotency_key, "r": ctx.run_id, "s": ctx.step},
        )
    _log(ctx, started)
    if ctx.attempt == 1:
        time.sleep(float(cfg.get("first_attempt_sleep", 0)))
    return {"cfg": cfg, "step": ctx.step}


@registry.handler("t.flaky")
def flaky(ctx: StepContext, payload: Any) -> dict[str, Any]:
    _log(ctx, time.time())
    cfg = _cfg(payload)
    if ctx.attempt <= int(cfg.get("fail_times", 0)):
        raise RuntimeError(f"planned failure {ctx.attempt}")
    return {"cfg": cfg, "step": ctx.step, "attempt": ctx.attempt}


@registry.handler("t.fail")
def fail(ctx: StepContext, payload: Any) -> None:
    _log(ctx, time.time())
    raise RuntimeError("always fails")


@registry.handler("t.needs_flag")
def needs_flag(ctx: StepContext, payload: Any) -> dict[str, Any]:
    _log(ctx, time.time())
    with ctx.engine.connect() as conn:
        flag = conn.execute(text("SELECT 1 FROM test_flags WHERE name = :n"), {"n": str(ctx.run_id)}).scalar()
    if not flag:
        raise RuntimeError("flag not set")
    return {"cfg": _cfg(payload), "step": ctx.step}


@registry.handler("t.sleep")
def sleep(ctx: StepContext, payload: Any) -> dict[str, Any]:
    cfg = _cfg(payload)
    started = time.time()
    time.sleep(float(cfg.get("seconds", 1)))
    _log(ctx, started)
    return {"cfg": cfg, "step": ctx.step}


def ledger_write(ctx: StepContext, phase: str) -> None:
    """Append one line to the external effect ledger (a file per region under $RM_TEST_LEDGER, outside
    the mesh: it survives SIGKILLs and partitions and no replication touches it). The line carries
    what the campaign checker's rule needs; its fields are listed in ``regionmesh/testing/ledger.py``."""
    folder = os.environ.get("RM_TEST_LEDGER")
    if not folder:
        return
    request = getattr(current_task, "request", None)
    line = json.dumps({
        "run": str(ctx.run_id), "step": ctx.step, "idx": ctx.index, "region": ctx.region, "attempt": ctx.attempt,
        "key": ctx.idempotency_key, "phase": phase, "t": time.time(), "mono": time.monotonic(),
        "host": socket.gethostname(), "pid": os.getpid(), "worker": getattr(request, "hostname", None),
        "epoch": ctx.epoch, "lease_until": None if ctx.lease_until is None else ctx.lease_until.timestamp(),
        "token": ctx.fencing_token})
    fd = os.open(os.path.join(folder, f"ledger-{ctx.region}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write with O_APPEND: whole lines, never interleaved
    finally:
        os.close(fd)


def _swallow_until(end: float) -> None:
    """Run until the monotonic clock reaches ``end``, swallowing whatever is raised meanwhile."""
    while time.monotonic() < end:
        try:
            threading.Event().wait(min(0.05, max(0.0, end - time.monotonic())))
        except BaseException:  # noqa: S110 - the point: a handler that swallows its timeout
            pass


@registry.handler("t.ledger")
def ledgered(ctx: StepContext, payload: Any) -> dict[str, Any]:
    """The step's side effect is the ledger line; 'sleep' per step makes it long enough to be cut.
    The step named by 'overrun' swallows every exception (StepTimeout too) on its first attempt and
    runs until 'overrun_s' after its start before its effect (the campaign's ``swallow_overrun``)."""
    started = time.monotonic()
    cfg = _cfg(payload)
    ledger_write(ctx, "start")
    if cfg.get("overrun") == ctx.step and ctx.attempt == 1:
        _swallow_until(started + float(cfg.get("overrun_s", 10.0)))
    else:
        # A timed wait rather than time.sleep: libfaketime (the clock-skew tests) breaks clock_nanosleep.
        threading.Event().wait(float(cfg.get("sleep", {}).get(ctx.step, 0)))
    ledger_write(ctx, "effect")
    # Which execution this output is from (the ledger's execution key): the campaign's checker
    # tells from it whether the completion the product accepted was a superseded execution's.
    return {"cfg": cfg, "step": ctx.step, "by": {"region": ctx.region, "pid": os.getpid(), "attempt": ctx.attempt,
                                                 "epoch": ctx.epoch, "token": ctx.fencing_token}}


@registry.handler("t.ledger_items")
def ledgered_items(ctx: StepContext, payload: Any) -> dict[str, Any]:
    """Like ``t.ledger``, and returns ``items`` (cfg ``items``, default 3) for a map step to fan out over."""
    out: dict[str, Any] = ledgered(ctx, payload)  # the decorator is untyped
    return out | {"items": list(range(int(out["cfg"].get("items", 3))))}


FAST = RetryPolicy(max_attempts=3, base_s=0.1, max_s=0.5)

registry.register(Workflow("t_diamond", steps=(
    Step("a", "t.record"),
    Step("b", "t.record", depends_on=("a",)),
    Step("c", "t.record", depends_on=("a",)),
    Step("d", "t.record", depends_on=("b", "c")),
)))
registry.register(Workflow("t_ledger", steps=(
    Step("a", "t.ledger", timeout_s=60),
    Step("b", "t.ledger", depends_on=("a",), timeout_s=60),
    Step("c", "t.ledger", depends_on=("a",), timeout_s=60),
    Step("d", "t.ledger", depends_on=("b", "c"), timeout_s=60),
)))
registry.register(Workflow("t_ledger_map", steps=(
    Step("a", "t.ledger_items", timeout_s=60),
    Step("m", "t.ledger", depends_on=("a",), map_over="a.items", timeout_s=60),
    Step("d", "t.ledger", depends_on=("m",), timeout_s=60),
)))
# t_ledger's shape with short timeouts: the campaign's swallow_overrun fault names a step of it whose
# first attempt overruns (bench/campaign/lease_faults.py).
OVERRUN_WORKFLOW, OVERRUN_TIMEOUT_S = "t_ledger_overrun", 2.0
_OVERRUN_RETRY = RetryPolicy(max_attempts=3, base_s=0.1, max_s=0.5)
registry.register(Workflow(OVERRUN_WORKFLOW, steps=(
    Step("a", "t.ledger", timeout_s=OVERRUN_TIMEOUT_S, retry=_OVERRUN_RETRY),
    Step("b", "t.ledger", depends_on=("a",), timeout_s=OVERRUN_TIMEOUT_S, retry=_OVERRUN_RETRY),
    Step("c", "t.ledger", depends_on=("a",), timeout_s=OVERRUN_TIMEOUT_S, retry=_OVERRUN_RETRY),
    Step("d", "t.ledger", depends_on=("b", "c"), timeout_s=OVERRUN_TIMEOUT_S, retry=_OVERRUN_RETRY),
)))
registry.register(Workflow("t_timeout_ledger", steps=(
    Step("slow", "t.ledger", timeout_s=1.0, retry=RetryPolicy(max_attempts=1)),
)))
registry.register(Workflow("t_flaky", steps=(Step("only", "t.flaky", retry=FAST),)))
registry.register(Workflow("t_fail", steps=(
    Step("first", "t.record"),
    Step("boom", "t.fail", depends_on=("first",), retry=RetryPolicy(max_attempts=2, base_s=0.1, max_s=0.2)),
    Step("never", "t.record", depends_on=("boom",)),
)))
registry.register(Workflow("t_timeout", steps=(
    Step("slow", "t.sleep", timeout_s=1.0, retry=RetryPolicy(max_attempts=1)),
)))
registry.register(Workflow("t_effect", steps=(
    Step("pay", "t.effect", timeout_s=60, retry=FAST),
    Step("after", "t.record", depends_on=("pay",)),
)))
registry.register(Workflow("t_cancel", steps=(
    Step("slow", "t.sleep", timeout_s=30),
    Step("later", "t.record", depends_on=("slow",)),
)))
registry.register(Workflow("t_retry", steps=(
    Step("a", "t.record"),
    Step("b", "t.needs_flag", depends_on=("a",), retry=RetryPolicy(max_attempts=1)),
    Step("c", "t.record", depends_on=("b",)),
)))
registry.register(Workflow("t_badmap", steps=(
    Step("a", "t.record"),
    Step("m", "t.record", depends_on=("a",), map_over="a.step"),
)))


def decompose(goal: str, data: Mapping[str, Any]) -> Iterable[Step]:
    if data.get("cycle"):
        return [Step("x", "t.record", depends_on=("y",)), Step("y", "t.record", depends_on=("x",))]
    if data.get("unknown_handler"):
        return [Step("x", "t.nope")]
    return [Step("x", "t.record")]


registry.register(Workflow("t_decomp", decomposer=decompose))


# Issue 23: a schedule's tick (one ledgered step) and waiting runs: a ledgered step, then Sleep
# ({"sleep_s": S}) or WaitFor ({"signal": NAME, "timeout_s": T}), then a ledgered step.
registry.register(Workflow("t_tick", steps=(Step("a", "t.ledger", timeout_s=60),)))


def decompose_wait(goal: str, data: Mapping[str, Any]) -> Iterable[Step]:
    first = Step("a", "t.ledger", timeout_s=60)
    if "sleep_s" in data:
        wait = Sleep("nap", float(data["sleep_s"]), ("a",))
    else:
        wait = WaitFor("w", str(data["signal"]), float(data.get("timeout_s", 60)), ("a",))
    return [first, wait, Step("b", "t.ledger", depends_on=(wait.key,), timeout_s=60)]


registry.register(Workflow("t_wait", decomposer=decompose_wait))
