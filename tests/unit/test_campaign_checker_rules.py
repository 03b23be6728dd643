"""The campaign checker's effect rules on hand-made histories: the three histories issue 20 found
passing, then a passing and a failing case per rule (overlap, forgiveness in a region and across
regions, lease overrun, order, expected work)."""

from __future__ import annotations

import importlib

import pytest

from bench.campaign_checker import Ack, Bounds, Fault, History, evaluate, plan, run_id
from bench.checker.verdict import (
    DUPLICATE_EFFECT,
    LEASE_OVERRUN,
    MISSING_EFFECT,
    ORDER,
    OVERLAP_ACROSS,
    OVERLAP_IN_REGION,
    STALE_COMPLETION,
    STUCK,
    UNEXPECTED_EFFECT,
)
from tests.unit.checker_histories import RUN, clean_abc, execution, history, isolated, with_d


def test_a_clean_history_passes() -> None:
    v = evaluate(history())
    assert v.ok, v.violations
    assert v.step_effects == 4 and v.crash_reruns == {} and v.open_executions == 0


# --- the three histories of issue 20 -----------------------------------------------------------------

def test_history_1_an_execution_started_long_after_its_region_was_cut_off_is_a_lease_overrun() -> None:
    # a isolated at t=100 (lease 4 s: it must stop by about 105); a starts d at 120, effect at 121; the
    # heir b runs d again at 122. Today's driver records the cut only by its kind and detail.
    legacy = Fault("repl_cut", None, 100.0, 160.0, regions=("a",), detail="isolated a for 50s")
    ledger = with_d(execution("d", "a", 120.0, 121.0), execution("d", "b", 122.0, 123.0, epoch=2))
    for fault in (legacy, isolated("a", 100.0, healed=150.0, heir="b", adopted_at=110.0)):
        v = evaluate(history(faults=[fault], ledger=ledger))
        assert LEASE_OVERRUN in v.classes and DUPLICATE_EFFECT in v.classes, v.violations
        assert "20.0s after it lost its lease" in v.of(LEASE_OVERRUN)[0]
        assert v.crash_reruns == {}


def test_history_2_two_live_executions_in_one_region_are_an_overlap_even_in_a_database_kill() -> None:
    ledger = with_d(execution("d", "a", 140.0, 145.0, attempt=1, pid=100),
                    execution("d", "a", 141.0, 146.0, attempt=2, pid=101))
    v = evaluate(history(faults=[Fault("pg_kill", "a", 138.0, 150.0)], ledger=ledger))
    assert v.of(OVERLAP_IN_REGION) and DUPLICATE_EFFECT in v.classes, v.violations
    assert v.crash_reruns == {}


def test_history_3_a_succeeded_run_whose_expected_step_never_ran_is_a_missing_effect() -> None:
    # The product forgot step c: no task row, no effect. Expectations come from the input, not its rows.
    ledger = [e for e in history().ledger if e["step"] != "c"]
    v = evaluate(history(ledger=ledger, tasks=set()))
    assert v.of(MISSING_EFFECT) == [f"('{RUN}', 'c', None)"], v.violations
    # A run no region calls succeeded is stuck, not missing an effect.
    h = history(ledger=ledger)
    h.runs = {r: [("t1", "k1", RUN, "running")] for r in h.regions}
    assert evaluate(h).classes == {STUCK, ORDER}  # d ran without c


# --- overlap in one region ---------------------------------------------------------------------------

def test_executions_one_after_the_other_in_a_region_do_not_overlap_but_need_a_crash() -> None:
    ledger = with_d(execution("d", "a", 94.0, 95.0, pid=100), execution("d", "a", 96.0, 97.0, attempt=2, pid=101))
    v = evaluate(history(ledger=ledger))
    assert v.classes == {DUPLICATE_EFFECT}, v.violations


def test_an_execution_started_while_another_ran_in_the_region_is_an_overlap_even_without_an_effect() -> None:
    ledger = with_d(execution("d", "a", 94.0, 98.0, pid=100), execution("d", "a", 95.0, None, attempt=2, pid=101))
    v = evaluate(history(ledger=ledger))
    assert v.classes == {OVERLAP_IN_REGION}, v.violations
    assert v.open_executions == 1


def test_an_execution_killed_before_the_repeat_started_does_not_overlap_it() -> None:
    kill = Fault("pool_kill", "a", 95.0, 95.5, detail="pid 100 running a step", pids=(100,))
    ledger = with_d(execution("d", "a", 94.0, None, pid=100), execution("d", "a", 96.0, 97.0, attempt=2, pid=101))
    v = evaluate(history(ledger=ledger, faults=[kill]))
    assert v.ok, v.violations
    assert v.open_executions == 0  # its end is the kill


def test_an_execution_without_effect_ends_when_its_pool_process_moved_on_or_was_seen_gone() -> None:
    # Campaign seed 24: the step limit's hard end SIGKILLed a pool process whose handler swallowed
    # its timeout (no effect, no fault record); the retry ran in a new process a second later, and
    # the region was killed by a fault long after. The process watch saw the process gone at 96.5.
    later_kill = Fault("region_failover", "a", 120.0, 125.0, detail="killed", killed=("a",))
    retry = execution("d", "a", 97.0, 97.5, attempt=2, pid=101)
    first = execution("d", "a", 94.0, None, pid=100)
    v = evaluate(history(ledger=with_d(first, retry), faults=[later_kill]))
    assert v.classes == {OVERLAP_IN_REGION}, v.violations  # nothing says it had ended: it may have run on
    h = history(ledger=with_d(first, retry), faults=[later_kill])
    h.exits = {("a", 100): 96.5}
    assert evaluate(h).ok, evaluate(h).violations
    h.exits = {("a", 100): 97.2}  # seen gone only after the retry started: an overlap
    assert evaluate(h).classes == {OVERLAP_IN_REGION}
    # A prefork process runs one handler at a time: its next start ends the one before.
    moved_on = execution("b", "a", 92.0, 93.0, pid=100)
    v = evaluate(history(ledger=clean_abc()[:2] + execution("c", "a", 92.0, 93.5) + first
                         + [dict(e, t=96.0) for e in moved_on] + retry, faults=[later_kill]))
    assert OVERLAP_IN_REGION not in v.classes and v.open_executions == 0, v.violations  # (d before b: ORDER)


# --- forgiveness in one region: the process died while the handler ran ------------------------------

@pytest.mark.parametrize(("fault", "forgiven"), [
    (Fault("pool_kill", "a", 95.5, 96.0, pids=(100,)), True),  # its pool process, right after the effect
    (Fault("pool_kill", "a", 95.5, 96.0, detail="pid 100 running a step"), True),  # today's driver: pid in detail
    (Fault("worker_kill", "a", 95.5, 99.0, detail="main pid 7, restarted"), True),  # no pool pids: the region's
    (Fault("region_failover", "a", 95.5, 150.0, killed=("a",)), True),
    (Fault("pool_kill", "a", 95.5, 96.0, pids=(999,)), False),  # another pool process
    (Fault("pool_kill", "b", 95.5, 96.0, pids=(100,)), False),  # another region
    (Fault("pool_kill", "a", 94.0 + 60, 161.0, pids=(100,)), False),  # long after the effect
    (Fault("pool_kill", "a", 99.5, 100.0, pids=(100,)), False),  # after the repeat had started
    (Fault("redis_kill", "a", 95.5, 98.0), False),  # a Redis restart interrupts no handler
    (Fault("pg_kill", "a", 95.5, 98.0), False),  # nor does a database kill (the completion is retried)
    (Fault("move", None, 95.5, 95.5), False),
])
def test_a_repeat_in_the_region_is_forgiven_only_after_its_process_died_while_it_ran(fault: Fault,
                                                                                     forgiven: bool) -> None:
    ledger = with_d(execution("d", "a", 94.0, 95.0, pid=100), execution("d", "a", 99.0, 100.0, attempt=2, pid=101))
    v = evaluate(history(ledger=ledger, faults=[fault]))
    assert v.ok is forgiven, v.violations
    assert sum(v.crash_reruns.values()) == (1 if forgiven else 0)
    if forgiven:
        assert all(rule.startswith("process killed") for rule in v.crash_reruns)


def test_a_repeat_in_the_region_after_it_lost_its_lease_while_the_handler_ran_is_forgiven() -> None:
    # Cut off at 100, the handler (started within the lease) takes effect at 103 and its completion is
    # refused; after the heal the task is re-queued at the next attempt.
    cut = isolated("a", 100.0, healed=130.0)
    ledger = with_d(execution("d", "a", 99.0, 103.0, pid=100), execution("d", "a", 165.0, 166.0, attempt=2, pid=101))
    v = evaluate(history(ledger=ledger, faults=[cut]))
    assert v.ok, v.violations
    assert v.crash_reruns == {"lease lost, re-queued in the region (repl_cut)": 1}
    # The same attempt again is not a re-queue: nothing says why it ran twice.
    ledger = with_d(execution("d", "a", 99.0, 103.0, pid=100), execution("d", "a", 165.0, 166.0, pid=101))
    assert evaluate(history(ledger=ledger, faults=[cut])).classes == {DUPLICATE_EFFECT}


# --- forgiveness across regions: the documented crash re-run ------------------------------------------

def test_the_documented_rerun_after_a_region_died_is_forgiven() -> None:
    # a killed at 100 right after d's effect (its completion died with it); b adopted at 108, epoch 2.
    death = Fault("region_failover", "a", 100.0, 200.0, killed=("a",), heir="b", adopted_at=108.0, healed=190.0)
    ledger = with_d(execution("d", "a", 98.0, 99.5), execution("d", "b", 109.0, 110.0, epoch=2))
    v = evaluate(history(ledger=ledger, faults=[death]))
    assert v.ok, v.violations
    assert v.crash_reruns == {"region died, heir adopted at a higher epoch (region_failover)": 1}


def test_a_handler_that_started_while_its_region_was_being_killed_is_the_documented_rerun() -> None:
    # The driver logs t0 before it kills the region's processes one by one; the lease ends within B anyway.
    death = Fault("region_failover", "a", 100.0, 200.0, killed=("a",), heir="b", adopted_at=101.0, healed=190.0)
    ledger = with_d(execution("d", "a", 100.05, 100.08), execution("d", "b", 108.0, 109.0, epoch=2))
    assert evaluate(history(ledger=ledger, faults=[death])).ok
    ledger = with_d(execution("d", "a", 106.0, 106.5), execution("d", "b", 108.0, 109.0, epoch=2))
    assert evaluate(history(ledger=ledger, faults=[death])).classes == {DUPLICATE_EFFECT, LEASE_OVERRUN}


def test_the_documented_rerun_after_a_live_region_was_cut_off_may_overlap_its_heir() -> None:
    # a cut off at 100 and failed over while reachable; its handler started at 103 (within the bound,
    # 105.04) and its effect lands at 112, after b adopted at 107 and started again at 108.
    cut = isolated("a", 100.0, healed=140.0, heir="b", adopted_at=107.0)
    ledger = with_d(execution("d", "a", 103.0, 112.0), execution("d", "b", 108.0, 109.0, epoch=2))
    v = evaluate(history(ledger=ledger, faults=[cut]))
    assert v.ok, v.violations
    assert v.crash_reruns == {"lease lost, heir adopted at a higher epoch (repl_cut)": 1}


@pytest.mark.parametrize(("what", "d_in_a", "d_in_b", "fault", "classes"), [
    ("repeat before the cut", (103.0, 112.0), (99.0, 113.0, 2),
     isolated("a", 100.0, healed=140.0, heir="b", adopted_at=107.0), {DUPLICATE_EFFECT, OVERLAP_ACROSS}),
    ("repeat at the same epoch", (103.0, 104.0), (108.0, 109.0, 1),
     isolated("a", 100.0, healed=140.0, heir="b", adopted_at=107.0), {DUPLICATE_EFFECT}),
    ("repeat in a region that is not the heir", (103.0, 104.0), (108.0, 109.0, 2),
     isolated("a", 100.0, healed=140.0, heir="c", adopted_at=107.0), {DUPLICATE_EFFECT}),
    ("cut region started past the bound", (106.0, 107.0), (108.0, 109.0, 2),
     isolated("a", 100.0, healed=140.0, heir="b", adopted_at=107.0), {DUPLICATE_EFFECT, LEASE_OVERRUN}),
    ("effect long before the cut", (94.0, 95.0), (118.0, 119.0, 2),
     isolated("a", 110.0, healed=150.0, heir="b", adopted_at=117.0), {DUPLICATE_EFFECT}),
    ("no failover: nobody adopted", (103.0, 104.0), (108.0, 109.0, 1),
     isolated("a", 100.0, healed=140.0), {DUPLICATE_EFFECT}),
    # Issue 12's planted re-run: a pool kill in a never makes b run the step again.
    ("pool kill in the first region", (94.0, 95.0), (110.0, 111.0, 1),
     Fault("pool_kill", "a", 95.5, 96.0), {DUPLICATE_EFFECT}),
    ("no fault, at once", (94.0, 98.0), (95.0, 99.0, 1), None, {DUPLICATE_EFFECT, OVERLAP_ACROSS}),
])
def test_a_repeat_in_another_region_is_forgiven_only_by_the_rule(what: str, d_in_a: tuple[float, float],
                                                                 d_in_b: tuple[float, float, int],
                                                                 fault: Fault | None, classes: set[str]) -> None:
    ledger = with_d(execution("d", "a", *d_in_a), execution("d", "b", d_in_b[0], d_in_b[1], epoch=d_in_b[2]))
    v = evaluate(history(ledger=ledger, faults=[fault] if fault else []))
    assert v.classes == classes, (what, v.violations)


def test_a_rerun_by_the_heir_of_a_later_failover_of_the_region_is_the_documented_rerun() -> None:
    # a, cut off at 100, ran d from 103 to 104; its completion was refused and the run (created in a's
    # last lease window) was not adopted by b; a was restored, the task waited for its deadline, and a
    # was killed at 150 and failed over to c, which re-ran d at epoch 2.
    cut = isolated("a", 100.0, healed=130.0, heir="b", adopted_at=100.0)
    death = Fault("region_failover", "a", 150.0, 200.0, killed=("a",), heir="c", adopted_at=151.0, healed=190.0)
    ledger = with_d(execution("d", "a", 103.0, 104.0), execution("d", "c", 155.0, 156.0, epoch=2))
    v = evaluate(history(ledger=ledger, faults=[cut, death]))
    assert v.ok, v.violations
    assert v.crash_reruns == {"lease lost, heir adopted at a higher epoch (repl_cut, then region_failover)": 1}
    # c as the heir of another region's failover adopted nothing of a's.
    other = Fault("region_failover", "b", 150.0, 200.0, killed=("b",), heir="c", adopted_at=151.0, healed=190.0)
    assert evaluate(history(ledger=ledger, faults=[cut, other])).classes == {DUPLICATE_EFFECT}
    # A failover of a before the cut that took the lease adopted nothing d was running then.
    early = Fault("region_failover", "a", 50.0, 90.0, killed=("a",), heir="c", adopted_at=51.0, healed=80.0)
    assert evaluate(history(ledger=ledger, faults=[early, cut])).classes == {DUPLICATE_EFFECT}


def test_without_epochs_in_the_ledger_the_adoption_is_read_from_todays_fault_log() -> None:
    death = Fault("region_failover", "a", 100.0, 200.0,
                  detail="killed, failed over to b after 8.0s (3 runs adopted), back and restored")

    def old(entries: list[dict[str, object]]) -> list[dict[str, object]]:  # lines written before issue 20
        return [{k: e[k] for k in ("run", "step", "idx", "region", "attempt", "key", "phase", "t")} for e in entries]

    ledger = old(with_d(execution("d", "a", 98.0, 99.5), execution("d", "b", 109.0, 110.0)))
    assert evaluate(history(ledger=ledger, faults=[death])).ok
    ledger = old(with_d(execution("d", "a", 98.0, 99.5), execution("d", "b", 107.0, 108.0)))  # before 108
    assert evaluate(history(ledger=ledger, faults=[death])).classes == {DUPLICATE_EFFECT}


def test_an_heir_that_started_before_the_old_owners_lease_ended_is_a_lease_overrun() -> None:
    # a, cut off at 100, claimed d at 101 seeing its lease until 104.5; b (the heir, epoch 2) started at 103.
    cut = isolated("a", 100.0, healed=140.0, heir="b")
    ledger = with_d(execution("d", "a", 101.0, 102.0, lease_until=104.5), execution("d", "b", 103.0, 106.0, epoch=2))
    v = evaluate(history(ledger=ledger, faults=[cut]))
    assert v.classes == {LEASE_OVERRUN} and "before the lease a saw at its claim ended" in v.of(LEASE_OVERRUN)[0]
    ledger = with_d(execution("d", "a", 101.0, 102.0, lease_until=104.5), execution("d", "b", 105.0, 106.0, epoch=2))
    assert evaluate(history(ledger=ledger, faults=[cut])).ok


# --- lease overrun: the fault log's clock ------------------------------------------------------------

@pytest.mark.parametrize(("start", "lease_until", "overrun"), [
    (104.0, None, False),  # within L(1+rho)+margin of the cut
    (105.5, None, True),  # past it
    (145.0, None, False),  # after the heal: the bound is not stretched to it, nor is this a violation
    (104.0, 104.5, False),  # a claim that saw its lease end within the bound
    (104.0, 112.0, True),  # a claim that saw its lease reach past the bound
])
def test_work_started_in_a_cut_off_region_is_bounded_by_the_lease_not_the_heal(start: float, lease_until: float | None,
                                                                               overrun: bool) -> None:
    ledger = with_d(execution("d", "a", start, start + 1, lease_until=lease_until))
    v = evaluate(history(ledger=ledger, faults=[isolated("a", 100.0, healed=140.0)]))
    assert (LEASE_OVERRUN in v.classes) is overrun, v.violations
    assert v.classes <= {LEASE_OVERRUN}


def test_todays_fault_log_ends_the_no_work_window_at_the_heal_not_at_health() -> None:
    cut = Fault("repl_cut", None, 100.0, 175.0, regions=("a",), detail="isolated a for 50s")
    assert LEASE_OVERRUN in evaluate(history(ledger=with_d(execution("d", "a", 149.0, 149.5)), faults=[cut])).classes
    assert evaluate(history(ledger=with_d(execution("d", "a", 151.0, 151.5)), faults=[cut])).ok


def test_a_cut_that_leaves_a_majority_bounds_nothing() -> None:
    pair = Fault("repl_cut", None, 100.0, 160.0, regions=("a", "b"), detail="pair a-b for 50s")
    v = evaluate(history(ledger=with_d(execution("d", "a", 120.0, 121.0)), faults=[pair]))
    assert v.ok, v.violations


def test_without_lease_bounds_the_overrun_is_not_checked_and_says_so() -> None:
    v = evaluate(history(bounds=None, ledger=with_d(execution("d", "a", 120.0, 121.0)),
                         faults=[isolated("a", 100.0, healed=150.0)]))
    assert v.ok and any("no lease bounds" in n for n in v.notes)


# --- order and expected work --------------------------------------------------------------------------

def test_a_step_started_before_an_effect_of_its_dependency_is_an_order_violation() -> None:
    ledger = clean_abc() + execution("d", "a", 93.2, 95.0)  # c took effect at 93.5
    v = evaluate(history(ledger=ledger))
    assert v.classes == {ORDER} and "before c took effect" in v.of(ORDER)[0], v.violations


def test_an_effect_the_definition_does_not_have_is_unexpected() -> None:
    ledger = history().ledger + execution("m", "a", 96.0, 97.0, idx=0)
    assert evaluate(history(ledger=ledger)).classes == {UNEXPECTED_EFFECT}


def test_a_map_run_expects_one_task_per_item() -> None:
    ack = Ack("raw", "t1", "k1", "a", 89.0, sid="s1", workflow="t_ledger_map", input={"items": 2})
    ledger = (execution("a", "a", 90.0, 91.0) + execution("m", "a", 92.0, 93.0, idx=0)
              + execution("m", "b", 92.0, 93.0, idx=1) + execution("d", "a", 94.0, 95.0))
    assert evaluate(history(acks=[ack], ledger=ledger)).ok
    v = evaluate(history(acks=[ack], ledger=[e for e in ledger if e["idx"] != 1]))
    assert v.classes == {MISSING_EFFECT, ORDER} and "'m', 1" in v.of(MISSING_EFFECT)[0], v.violations


def test_a_run_whose_input_is_unknown_is_checked_for_duplicates_only_and_said_so() -> None:
    v = evaluate(history(acks=[Ack("direct", "t1", "k1", "a", 89.0)], ledger=clean_abc()))
    assert v.ok and any("without a known workflow" in n for n in v.notes)


def test_a_task_the_product_recorded_done_without_an_effect_is_still_reported() -> None:
    v = evaluate(history(tasks={(RUN, "z", 0)}))
    assert v.of(MISSING_EFFECT) == [f"('{RUN}', 'z', 0)"]


def test_an_effect_line_without_its_start_counts_as_an_execution() -> None:
    torn = [e for e in with_d(execution("d", "a", 94.0, 95.0)) if not (e["step"] == "d" and e["phase"] == "start")]
    assert evaluate(history(ledger=torn)).ok


def test_the_checker_plans_the_ledger_workflows_as_they_are_defined() -> None:
    """The checker's copy of the DAG shapes matches the workflow definitions the workers load."""
    module = None
    for name in ("regionmesh.testing.workflows", "tests.support.workflows"):
        try:
            module = importlib.import_module(name)
            break
        except ImportError:
            continue
    assert module is not None
    registry = module.registry
    for workflow in ("t_ledger", "t_ledger_map"):
        steps = registry.get(workflow).steps
        p = plan(workflow, {"items": 3})
        assert p is not None
        assert {s for s, _ in p.tasks} == {s.key for s in steps}
        for step in steps:
            for (name, _), deps in p.after.items():
                if name == step.key:
                    assert {d for d, _ in deps} == set(step.depends_on) or (step.depends_on == () and not deps)


def test_run_ids_are_derived_from_tenant_and_key_as_documented() -> None:
    from regionmesh.workers.submission import run_id_for

    assert run_id("t1", "k1") == str(run_id_for("t1", "k1"))


def test_the_lease_bounds_default_to_the_settings_the_campaign_gave_its_mesh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGIONMESH_LEASE_S", "REGIONMESH_CLOCK_DRIFT", "REGIONMESH_LEASE_MARGIN_S"):
        monkeypatch.delenv(name, raising=False)
    assert Bounds.from_env() is None
    monkeypatch.setenv("REGIONMESH_LEASE_S", "4.0")
    monkeypatch.setenv("REGIONMESH_CLOCK_DRIFT", "0.01")
    assert Bounds.from_env() is None  # all three or none
    monkeypatch.setenv("REGIONMESH_LEASE_MARGIN_S", "1.0")
    assert Bounds.from_env() == Bounds(4.0, 0.01, 1.0)
    assert History([], [], [], {}, set(), [], True, [], {}, [], set(), []).bounds == Bounds(4.0, 0.01, 1.0)


@pytest.mark.parametrize(("kept", "classes"), [
    ({"region": "b", "pid": 100, "attempt": 1, "epoch": 2}, set()),  # the heir's: right
    ({"region": "a", "pid": 100, "attempt": 1, "epoch": 1}, {STALE_COMPLETION}),  # the old owner's, accepted late
])
def test_the_output_a_task_keeps_must_be_from_the_highest_epoch_that_took_effect(kept: dict[str, int],
                                                                                 classes: set[str]) -> None:
    # The documented re-run: a cut off at 100, its handler of d still running when b adopted at
    # epoch 2. The product must keep b's completion; a's, accepted after a's restore (a completion
    # that does not check the run's epoch), is the stale write the epoch fences off.
    cut = isolated("a", 100.0, healed=140.0, heir="b", adopted_at=107.0)
    ledger = with_d(execution("d", "a", 103.0, 112.0), execution("d", "b", 108.0, 109.0, epoch=2))
    v = evaluate(history(ledger=ledger, faults=[cut], accepted={(RUN, "d", None): kept}))
    assert v.classes == classes, v.violations


def test_a_handler_started_while_its_worker_was_being_killed_ended_with_that_kill() -> None:
    # Found by CI's seed 12: a worker kill recorded at t0 = 100 killed its pool process a moment
    # later, after that process had started d at 101; the restarted worker ran d again at 110.
    # The first execution ended by the kill's t1 (104), not at the region's next kill (200): no
    # overlap, and the repeat is the documented re-run of a killed process.
    kill = Fault("worker_kill", "a", 100.0, 104.0, pids=(100,))
    later = Fault("region_failover", "a", 200.0, 230.0, killed=("a",), heir="b", adopted_at=201.0)
    ledger = with_d(execution("d", "a", 101.0, None), execution("d", "a", 110.0, 111.0, pid=200, attempt=2))
    v = evaluate(history(ledger=ledger, faults=[kill, later]))
    assert v.ok, v.violations
