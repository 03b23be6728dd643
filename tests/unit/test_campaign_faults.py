"""The campaign's fault schedule and the fault records of issue 21's faults (pauses, slow commits,
keeper hand-offs, a handler that swallows its timeout) as the checker reads them: pure parts only,
on hand-made histories; the faults themselves run in the campaign against real processes."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType, SimpleNamespace
from typing import Any

import pytest

from bench.campaign import lease_faults
from bench.campaign.faults import KINDS, LEASE_KINDS, Faults
from bench.campaign.record import Plan, Record
from bench.campaign.schedule import schedule
from bench.campaign_checker import Ack, Fault, evaluate, plan
from bench.checker.faults import lease_lost, no_work_window, normalized
from bench.checker.verdict import DUPLICATE_EFFECT, LEASE_OVERRUN, OVERLAP_IN_REGION
from regionmesh.testing.workflows import OVERRUN_TIMEOUT_S, OVERRUN_WORKFLOW, _swallow_until
from regionmesh.workers.registry import default_registry as registry
from tests.unit.checker_histories import BOUNDS, REGIONS, execution, history, with_d

B = BOUNDS.promise_s


class _Instant(threading.Event):
    """A stop event whose waits return at once (the schedule's pauses between faults)."""

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


class _Mesh(SimpleNamespace):
    def wait_healthy(self, timeout: float) -> bool:
        return True


def _faults(seen: list[str]) -> Faults:
    mesh = _Mesh(dev=None, regions=list(REGIONS))
    faults = Faults(Plan.of(3, 0, 3), mesh, Record(lambda _: None), _Instant())  # type: ignore[arg-type]
    for kind in KINDS:
        setattr(faults, kind, lambda *a, kind=kind: seen.append(kind))
    return faults


# --- the schedule ------------------------------------------------------------------------------------

def test_every_kind_is_injected_by_its_own_method() -> None:
    seen: list[str] = []
    faults = _faults(seen)
    for kind in KINDS:
        faults.inject(kind, random.Random(0), 10.0)
    assert seen == KINDS
    assert set(LEASE_KINDS) <= set(KINDS) and len(set(KINDS)) == len(KINDS)


def _order(seed: int) -> list[str]:
    seen: list[str] = []
    faults = _faults(seen)
    plan = Plan.of(seed, 0, 3)
    schedule(plan, faults.mesh, faults, faults.record, _Instant())
    return seen


def test_a_short_campaign_injects_every_kind_once_in_an_order_its_seed_decides() -> None:
    first = _order(3)
    assert sorted(first) == sorted(KINDS)
    assert _order(3) == first
    assert any(_order(seed) != first for seed in (4, 5, 6))


# --- pauses ------------------------------------------------------------------------------------------

def paused_keeper(region: str, t0: float, t1: float, *, legacy: bool = False) -> Fault:
    detail = f"main pid 42 (holds the lease keeper lock) stopped for {t1 - t0:.1f}s (L=4s)"
    if legacy:  # a record that only says so in its detail
        return Fault("pause_main", region, t0, t1, detail=detail, pids=(42,))
    return Fault("pause_main", region, t0, t1, detail=detail, pids=(42,), cut_off=(region,), healed=t1)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_paused_lease_keeper_takes_its_regions_lease_until_sigcont(legacy: bool) -> None:
    f = normalized(paused_keeper("a", 100.0, 110.0, legacy=legacy), REGIONS)
    assert lease_lost(f) == ("a",)
    assert no_work_window(f, "a", B) == (100.0 + B, 110.0)
    assert no_work_window(f, "b", B) is None


@pytest.mark.parametrize(("start", "overrun"), [
    (104.0, False),  # within L(1+rho)+margin of the pause: the lease may still be held
    (107.0, True),  # the keeper beats for no one: nothing may start
    (111.0, False),  # after SIGCONT the keeper beats again
])
def test_work_started_while_the_keeper_was_paused_is_bounded_by_the_lease(start: float, overrun: bool) -> None:
    v = evaluate(history(faults=[paused_keeper("a", 100.0, 110.0)],
                         ledger=with_d(execution("d", "a", start, start + 0.5))))
    assert (LEASE_OVERRUN in v.classes) is overrun, v.violations


def test_a_paused_main_process_that_does_not_keep_the_lease_bounds_nothing() -> None:
    f = Fault("pause_main", "a", 100.0, 110.0, detail="main pid 42 (does not hold the lease keeper lock) stopped",
              pids=(42,))
    assert lease_lost(normalized(f, REGIONS)) == ()
    assert evaluate(history(faults=[f], ledger=with_d(execution("d", "a", 107.0, 107.5)))).ok


def test_a_pool_pause_forgives_no_repeat_of_the_paused_handler() -> None:
    # d's handler (pid 100) stopped 95..107; a second attempt in the region after it is a duplicate,
    # and one started while it was stopped overlaps it.
    pause = Fault("pause_pool", "a", 95.0, 107.0, detail="pool pid 100 running a step", pids=(100,))
    later = with_d(execution("d", "a", 94.0, 108.0, pid=100), execution("d", "a", 110.0, 111.0, attempt=2, pid=101))
    assert evaluate(history(faults=[pause], ledger=later)).classes == {DUPLICATE_EFFECT}
    beside = with_d(execution("d", "a", 94.0, 108.0, pid=100), execution("d", "a", 100.0, 101.0, attempt=2, pid=101))
    assert OVERLAP_IN_REGION in evaluate(history(faults=[pause], ledger=beside)).classes
    alone = with_d(execution("d", "a", 94.0, 108.0, pid=100))
    assert evaluate(history(faults=[pause], ledger=alone)).ok


# --- slow commits ------------------------------------------------------------------------------------

def slow_commit(cut: bool) -> Fault:
    if not cut:
        return Fault("slow_commit", "a", 100.0, 110.0, detail="claim: step_tasks row x locked FOR UPDATE")
    links = tuple([("a", o) for o in ("b", "c")] + [(o, "a") for o in ("b", "c")])
    return Fault("slow_commit", "a", 101.0, 130.0, detail="claim: … a isolated", severed=links, healed=111.0)


def test_a_handler_started_when_a_lock_held_across_a_lease_loss_is_released_is_a_lease_overrun() -> None:
    # The claim checked the lease before its lock wait (t < 101), the lock was released at 108, past
    # the cut's t0 + B, the links still cut: the handler it started has no lease.
    ledger = with_d(execution("d", "a", 108.2, 108.5))
    assert LEASE_OVERRUN in evaluate(history(faults=[slow_commit(cut=True)], ledger=ledger)).classes
    assert evaluate(history(faults=[slow_commit(cut=False)], ledger=ledger)).ok


# --- a handler that swallows its timeout -------------------------------------------------------------



def _overrun_history(ledger: list[dict[str, Any]]) -> Any:
    return history(acks=[Ack("direct", "t1", "k1", "a", 89.0, sid="s1", workflow=OVERRUN_WORKFLOW,
                             input=lease_faults.overrun_input(random.Random(1)))], ledger=ledger)


def test_an_overrunning_attempt_ended_by_its_step_limit_then_retried_is_one_effect() -> None:
    # attempt 1 of d swallows its timeout and is ended by its watchdog (no effect); attempt 2 runs.
    ledger = with_d(execution("d", "a", 94.0, None, pid=100), execution("d", "a", 98.0, 98.5, attempt=2, pid=101))
    v = evaluate(_overrun_history(ledger))
    assert v.ok, v.violations


def test_an_overrunning_attempt_that_outlived_its_retry_is_an_overlap_and_a_duplicate() -> None:
    # Without the hard end: the reconciler re-queued d at 101 while attempt 1 still ran; both took effect.
    ledger = with_d(execution("d", "a", 94.0, 104.0, pid=100), execution("d", "a", 101.0, 101.5, attempt=2, pid=101))
    v = evaluate(_overrun_history(ledger))
    assert {OVERLAP_IN_REGION, DUPLICATE_EFFECT} <= v.classes, v.violations


def test_the_overrun_input_runs_past_the_timeout_and_the_slack() -> None:
    data = lease_faults.overrun_input(random.Random(7))
    assert data["overrun"] in "abcd"
    assert data["overrun_s"] > OVERRUN_TIMEOUT_S + lease_faults.DEADLINE_SLACK_S
    assert data == lease_faults.overrun_input(random.Random(7))


def test_the_checker_plans_the_overrun_workflow_as_it_is_defined() -> None:
    steps = registry.get(OVERRUN_WORKFLOW).steps
    p = plan(OVERRUN_WORKFLOW, {})
    assert p is not None and {s for s, _ in p.tasks} == {s.key for s in steps}
    for step in steps:
        assert {d for d, _ in p.after[(step.key, None)]} == set(step.depends_on)
        assert step.timeout_s == OVERRUN_TIMEOUT_S


@pytest.fixture
def alarm() -> Iterator[None]:
    """SIGALRM raises in the main thread, as the step limit's soft end does."""

    def raise_(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("the step's timeout")

    old = signal.signal(signal.SIGALRM, raise_)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.usefixtures("alarm")
def test_the_overrunning_handler_swallows_what_is_raised_in_it_and_runs_to_its_end() -> None:
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)  # raised again and again while it runs
    _swallow_until(started + 0.4)
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert time.monotonic() - started >= 0.4


# --- a keeper hand-off in the region whose vote decides a failover -----------------------------------

def handover_failover(t0: float = 100.0) -> Fault:
    """a and b cut from each other; c's keeper lock moved to another process and back; c stopped
    granting a at t0 (a's lease lost), b adopted at 110, a restored at 150."""
    return Fault("handover_failover", "a", t0, 160.0, detail="a-b cut; c's keeper lock to lease keep",
                 severed=(("a", "b"), ("b", "a")), cut_off=("a",), heir="b", adopted_at=110.0, healed=150.0)


def test_the_handover_failovers_victim_lost_its_lease_when_the_deciding_region_stopped_granting_it() -> None:
    f = normalized(handover_failover(), REGIONS)
    assert lease_lost(f) == ("a",)  # a pair cut alone takes no one's lease
    assert no_work_window(f, "a", B) == (100.0 + B, 150.0)


@pytest.mark.parametrize(("d_in_a", "d_in_b", "lease_until", "expect"), [
    # a's handler ran when c stopped granting; b re-ran it after adopting: the documented re-run
    ((99.0, 101.0), (111.0, 112.0), 103.0, set()),
    # b started before the lease a saw at its claim had ended: c expired a too early
    ((99.0, 101.0), (102.0, 103.0), 104.5, {LEASE_OVERRUN}),
    # a started it long after c stopped granting: a worked without a lease
    ((107.0, 107.5), (111.0, 112.0), None, {LEASE_OVERRUN}),
])
def test_a_rerun_by_the_heir_is_judged_by_when_the_victim_lost_its_lease(
        d_in_a: tuple[float, float], d_in_b: tuple[float, float], lease_until: float | None, expect: set[str]) -> None:
    ledger = with_d(execution("d", "a", *d_in_a, lease_until=lease_until), execution("d", "b", *d_in_b, epoch=2))
    v = evaluate(history(faults=[handover_failover()], ledger=ledger))
    assert (expect <= v.classes) if expect else v.ok, v.violations


def test_a_fault_record_keeps_its_instants_on_the_monotonic_clock_beside_the_wall_clock() -> None:
    record = Record(lambda _: None)
    record.fault("pause_pool", "a", 100.0, 110.0, "pool pid 7 stopped", pids=(7,), mono=(5000.0, 5010.0))
    (f,) = record.faults
    assert (f.t0, f.t1, f.mono, f.pids) == (100.0, 110.0, (5000.0, 5010.0), (7,))


def test_a_failover_refused_for_work_the_heir_lacks_goes_to_the_region_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.campaign import faults as faults_module
    from regionmesh.ops.failover import FailoverReport, HeirLacksWork

    asked: list[str] = []

    def failover(config: Any, victim: str, heir: str, **_: Any) -> FailoverReport:
        asked.append(heir)
        if heir == "us-east":
            raise HeirLacksWork("us-east lacks work", victim, heir, "ap-south", {"us-east": "0/10", "ap-south": "0/20"})
        return FailoverReport(victim, heir, 3, 2, 1, 0.5)

    monkeypatch.setattr(faults_module, "failover", failover)
    faults = _faults([])
    faults.mesh.config = None
    faults.mesh.heirs = lambda victim: ["us-east", "ap-south"]
    report, _began, heir = faults._fail_over("eu-west", "us-east", even_if_reachable=True)
    assert asked == ["us-east", "ap-south"] and heir == "ap-south" and report.to_region == "ap-south"
    assert any("failing over to ap-south instead" in n for n in faults.record.notes)


def test_a_holder_outside_the_zone_makes_the_heir_catch_up_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.campaign import faults as faults_module
    from regionmesh.ops.failover import FailoverReport, HeirLacksWork

    caught_up: list[str] = []

    def failover(config: Any, victim: str, heir: str, **_: Any) -> FailoverReport:
        assert heir == "us-east"  # never ap-south, outside the victim's zone
        if not caught_up:
            raise HeirLacksWork("us-east lacks work", victim, heir, "ap-south", {"us-east": "0/10", "ap-south": "0/20"})
        return FailoverReport(victim, heir, 3, 2, 1, 0.5)

    monkeypatch.setattr(faults_module, "failover", failover)
    monkeypatch.setattr(faults_module.time, "sleep", lambda s: None)
    faults = _faults([])
    faults.mesh.config = None
    faults.mesh.heirs = lambda victim: ["us-east"]
    report, _began, heir = faults._fail_over("eu-west", "us-east", even_if_reachable=True, catch_up=caught_up.append)
    assert caught_up == ["us-east"] and heir == "us-east" and report.to_region == "us-east"
    with pytest.raises(HeirLacksWork):  # no way to let the heir catch up: the refusal stands
        caught_up.clear()
        faults._fail_over("eu-west", "us-east", even_if_reachable=True)
