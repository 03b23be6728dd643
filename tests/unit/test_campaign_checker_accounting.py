"""The campaign checker's accounting of acknowledged publishes (by submission id, and the weaker
key-based check when the product records none), its own cross-region comparison, and the fault
log read as the lease rule needs it."""

from __future__ import annotations

import pytest

from bench.campaign_checker import Ack, Fault, SubmissionRecord, cut_off_from_majority, evaluate, run_id
from bench.checker.accounting import hand_off
from bench.checker.compare import compare
from bench.checker.faults import normalized
from bench.checker.gather import marker_hits
from bench.checker.verdict import DIVERGENCE, DUPLICATE_RUN, LOST, LOST_FIRST, RESIDENCY
from tests.unit.checker_histories import REGIONS, RUN, history

FIRST = Ack("direct", "t1", "k1", "a", 89.0, sid="s1", workflow="t_ledger", input={})
RESEND = Ack("direct", "t1", "k1", "a", 120.0, sid="s1-r1", first=False, workflow="t_ledger", input={})


def created(sid: str, region: str = "a", run: str = RUN) -> SubmissionRecord:
    return SubmissionRecord(region, sid, run, "created")


def duplicate(sid: str, region: str = "a", run: str = RUN) -> SubmissionRecord:
    return SubmissionRecord(region, sid, run, "duplicate")


# --- the weaker, key-based check (the product records no submissions yet) ------------------------------

def test_without_submission_records_loss_is_judged_by_key_and_the_verdict_says_it_is_weaker() -> None:
    v = evaluate(history())
    assert v.ok and v.accounting == "key" and v.accounted == {"has a run": 1}
    assert any("cannot be seen" in n for n in v.notes)
    v = evaluate(history(acks=[FIRST, Ack("raw", "t2", "k2", "b", 99.0, sid="s2")]))
    assert v.classes == {LOST} and "key k2" in v.lost[0]


def test_a_key_whose_run_came_after_the_producers_resend_is_counted() -> None:
    h = history(acks=[Ack("direct", "t1", "k1", "a", 89.0, resent_at=119.0, sid="s1")], created={("t1", "k1"): 121.0})
    v = evaluate(h)
    assert v.resent == {"direct": 1} and v.created_after_resend == {"direct": 1}


# --- by submission id -------------------------------------------------------------------------------

@pytest.mark.parametrize(("records", "dead", "waiting", "down", "outcome"), [
    ([created("s1")], [], {}, set(), "created"),
    ([created("s1", region) for region in REGIONS], [], {}, set(), "created"),  # replicated: one record
    ([created("s0"), duplicate("s1")], [], {}, set(), "duplicate"),
    ([created("s0")], [("a", "s1", "unknown workflow")], {}, set(), "dead-lettered"),
    ([created("s0")], [], {"s1": "b"}, {"b"}, "waiting"),
])
def test_every_acknowledged_publish_is_accounted_for(records: list[SubmissionRecord],
                                                     dead: list[tuple[str, str, str]], waiting: dict[str, str],
                                                     down: set[str], outcome: str) -> None:
    v = evaluate(history(acks=[FIRST], submissions=records, dead_letters=dead, valid_submission_ids=set(),
                         waiting=waiting, down_at_end=down))
    assert v.accounting == "submission id" and v.accounted == {outcome: 1}
    assert v.ok, v.violations


@pytest.mark.parametrize(("records", "dead", "waiting", "down", "why"), [
    ([created("s0")], [], {}, set(), "no record of it"),
    ([created("s0")], [("a", "s1", " ")], {}, set(), "no record of it"),  # a dead letter without a reason
    ([created("s0")], [], {"s1": "b"}, set(), "no record of it"),  # "waiting" in a broker that was up
    ([created("s1", run=run_id("t1", "other"))], [], {}, set(), "not its key's run"),
])
def test_an_acknowledged_publish_nothing_accounts_for_is_lost(records: list[SubmissionRecord],
                                                             dead: list[tuple[str, str, str]],
                                                             waiting: dict[str, str], down: set[str],
                                                             why: str) -> None:
    v = evaluate(history(acks=[FIRST], submissions=records, dead_letters=dead, valid_submission_ids=set(),
                         waiting=waiting, down_at_end=down))
    assert LOST in v.classes and why in v.of(LOST)[0], v.violations


def test_a_run_that_exists_only_because_of_a_resend_is_a_lost_first_publish_by_hand_off() -> None:
    kill = Fault("worker_kill", "a", 95.0, 99.0, detail="main pid 7, restarted")
    v = evaluate(history(acks=[FIRST, RESEND], submissions=[created("s1-r1")], faults=[kill]))
    assert v.classes == {LOST_FIRST} and v.lost_first == {"pop window": 1}, v.violations
    assert v.accounted == {"created": 1}
    assert "created by re-send s1-r1 (pop window)" in v.of(LOST_FIRST)[0]


def test_a_first_publish_found_a_duplicate_of_its_resends_run_was_only_delayed() -> None:
    v = evaluate(history(acks=[FIRST, RESEND], submissions=[created("s1-r1", "b"), duplicate("s1", "b")]))
    assert v.ok, v.violations
    assert v.delayed_first == {"forward": 1} and v.accounted == {"created": 1, "duplicate": 1}


def test_a_run_created_by_two_submissions_is_a_duplicate_run() -> None:
    v = evaluate(history(acks=[FIRST, RESEND], submissions=[created("s1"), created("s1-r1")]))
    assert v.classes == {DUPLICATE_RUN} and "created by 2 submissions" in v.of(DUPLICATE_RUN)[0]
    v = evaluate(history(acks=[FIRST], submissions=[created("s1", "a"), duplicate("s1", "b")]))
    assert DUPLICATE_RUN in v.classes  # one submission, two outcomes


@pytest.mark.parametrize(("fault", "created_in", "label"), [
    (Fault("worker_kill", "a", 95.0, 99.0), "a", "pop window"),
    (Fault("region_failover", "a", 95.0, 150.0), "b", "pop window"),
    (Fault("redis_kill", "a", 95.0, 99.0), "a", "broker restart"),
    (Fault("redis_kill", "a", 130.0, 131.0), "b", "forward"),  # after the re-send: not it
    (Fault("worker_kill", "c", 95.0, 99.0), "a", "unexplained"),
])
def test_a_lost_first_publish_is_attributed_to_a_hand_off(fault: Fault, created_in: str, label: str) -> None:
    assert hand_off(FIRST, created_in, RESEND.at, [fault]) == label


# --- the checker's own comparison across regions -----------------------------------------------------------

def test_rows_that_differ_or_are_missing_in_a_region_are_divergence() -> None:
    same = {"workflow_runs": {r: {RUN: ("t1", "succeeded", 1)} for r in REGIONS}}
    assert compare(same, REGIONS) == ([], [])
    differ = {"workflow_runs": {"a": {RUN: ("t1", "succeeded", 1)}, "b": {RUN: ("t1", "succeeded", 2)}, "c": {}}}
    lines, outside = compare(differ, REGIONS)
    assert lines == [f"workflow_runs {RUN}: a=('t1', 'succeeded', 1), b=('t1', 'succeeded', 2), c=<absent>"]
    assert outside == []
    v = evaluate(history(rows=differ))
    assert v.classes == {DIVERGENCE}
    # The product's verify is a second opinion: it saying "differ" is a finding too.
    assert evaluate(history(rows=same, identical=False)).classes == {DIVERGENCE}
    assert evaluate(history(rows=same)).ok


def test_the_comparison_reports_a_bounded_number_of_rows_and_a_count() -> None:
    many = {"step_tasks": {"a": {i: ("t1", 1) for i in range(30)}, "b": {}, "c": {}}}
    lines, _ = compare(many, REGIONS)
    assert len(lines) == 21 and lines[-1] == "step_tasks: 10 more rows"


# --- data residency: the zones the campaign set up, never the product's word --------------------------

ZONED = {"tz": ("a", "b")}


def test_a_zoned_tenants_rows_are_compared_in_its_zone_only_and_absent_elsewhere() -> None:
    in_zone = {"step_tasks": {"a": {RUN: ("tz", "succeeded")}, "b": {RUN: ("tz", "succeeded")}, "c": {}}}
    assert compare(in_zone, REGIONS, lambda t: list(ZONED[t]) if t in ZONED else None) == ([], [])
    assert evaluate(history(rows=in_zone, zones=ZONED)).ok
    # The same rows checked as if unzoned: c lacks them.
    assert evaluate(history(rows=in_zone)).classes == {DIVERGENCE}
    leaked = {"step_tasks": {r: {RUN: ("tz", "succeeded")} for r in REGIONS}}
    differ, outside = compare(leaked, REGIONS, lambda t: list(ZONED[t]) if t in ZONED else None)
    assert differ == [] and outside == [f"step_tasks {RUN} of zoned tenant tz held outside its zone in c"]
    assert evaluate(history(rows=leaked, zones=ZONED)).classes == {RESIDENCY}


def test_a_zoned_tenants_input_marker_in_an_out_of_zone_dump_is_a_residency_violation() -> None:
    hits = marker_hits({"a": "x zsecret-1 y zsecret-1", "b": "", "c": "COPY … zsecret-1 …"}, {"tz": "zsecret-"})
    assert hits == {"a": {"tz": 2}, "b": {}, "c": {"tz": 1}}
    v = evaluate(history(zones=ZONED, marker_hits=hits))
    assert v.classes == {RESIDENCY} and v.of(RESIDENCY) == ["c: 1 occurrence(s) of zoned tenant tz's input in its database dump"]
    assert evaluate(history(zones=ZONED, marker_hits={"a": {"tz": 2}, "c": {}})).ok
    # Zoned tenants without dumps: said, not silently passed.
    assert any("residency not checked" in n for n in evaluate(history(zones=ZONED)).notes)


# --- the fault log -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("severed", "cut_off"), [
    ({("a", "b"), ("a", "c"), ("b", "a"), ("c", "a")}, ("a",)),  # isolated
    ({("a", "b"), ("a", "c")}, ("a",)),  # deaf: it hears no acknowledgement
    ({("b", "a"), ("c", "a")}, ("a",)),  # unheard: its beats reach no one
    ({("a", "b"), ("b", "a")}, ()),  # a pair: each still has c
    (set(), ()),
])
def test_cut_off_from_a_majority(severed: set[tuple[str, str]], cut_off: tuple[str, ...]) -> None:
    assert cut_off_from_majority(REGIONS, severed) == cut_off


def test_in_five_regions_a_pair_cut_off_from_the_three_others_has_no_majority() -> None:
    five = ["a", "b", "c", "d", "e"]
    severed = {(x, y) for x in "ab" for y in "cde"} | {(y, x) for x in "ab" for y in "cde"}
    assert cut_off_from_majority(five, severed) == ("a", "b")


def test_todays_fault_log_is_read_for_the_lease_rule() -> None:
    deaf = normalized(Fault("repl_cut", None, 1.0, 60.0, regions=("us-east",), detail="deaf us-east for 30s"),
                      ["us-east", "eu-west", "ap-south"])
    assert deaf.cut_off == ("us-east",) and set(deaf.severed) == {("us-east", "eu-west"), ("us-east", "ap-south")}
    assert deaf.healed == 30.5  # the links came back after the cut's length; t1 is later (the wait for health)
    pair = normalized(Fault("repl_cut", None, 1.0, 60.0, regions=("us-east", "eu-west"),
                            detail="pair us-east-eu-west for 30s"), ["us-east", "eu-west", "ap-south"])
    assert pair.cut_off == ()
    pool = normalized(Fault("pool_kill", "us-east", 1.0, 1.5, detail="pid 4242 running a step"), REGIONS)
    assert pool.pids == (4242,)
    failover = normalized(Fault("region_failover", "a", 10.0, 90.0,
                                detail="killed, failed over to c after 7.5s (2 runs adopted), back and restored"),
                          REGIONS)
    assert (failover.killed, failover.heir, failover.adopted_at) == (("a",), "c", 17.5)
    assert failover.healed == 17.5  # surely still dead then; when the restore returned is not logged
    # What a driver sets itself is kept.
    explicit = Fault("repl_cut", None, 1.0, 60.0, regions=("a",), detail="isolated a", cut_off=("b",))
    assert normalized(explicit, REGIONS).cut_off == ("b",)
