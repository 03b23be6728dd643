"""The checker's rule for a failover that adopted too early (issue 21 item 1's hole): the heir's
adoption had committed (the failover call returned) before the lease the victim read at a claim
ended. Pure: hand-made executions and fault records."""

from __future__ import annotations

from bench.checker.executions import Execution, adopted_within_lease
from bench.checker.history import Fault
from bench.checker.verdict import LEASE_OVERRUN, Verdict


def _verdict() -> Verdict:
    return Verdict(submissions={}, faults={}, runs=0, step_effects=0)


def _failover(adopted_by: float | None) -> Fault:
    return Fault("handover_failover", "eu-west", 100.0, 130.0, cut_off=("eu-west",), heir="us-east",
                 adopted_at=95.0, adopted_by=adopted_by, healed=125.0)


CLAIMS = {"eu-west": [Execution("eu-west", 99.0, 99.2, 1, 7, 1, lease_until=103.3),
                      Execution("eu-west", 101.5, None, 1, 7, 1, lease_until=103.3)],
          "us-east": [Execution("us-east", 101.9, 102.0, 1, 9, 2, lease_until=200.0)]}


def test_an_adoption_before_the_victims_lease_ended_is_a_lease_overrun() -> None:
    v = _verdict()
    adopted_within_lease([_failover(102.0)], CLAIMS, v)
    assert [c for c, _ in v.findings] == [LEASE_OVERRUN]
    assert "1.30s before the lease eu-west read at a claim" in v.findings[0][1]


def test_an_adoption_after_every_lease_the_victim_read_is_fine() -> None:
    v = _verdict()
    adopted_within_lease([_failover(104.0)], CLAIMS, v)
    assert v.findings == []


def test_claims_after_the_adoption_and_faults_without_its_time_are_not_judged() -> None:
    v = _verdict()
    later = {"eu-west": [Execution("eu-west", 126.0, 126.1, 1, 7, 1, lease_until=131.0)]}  # restored: a new lease
    adopted_within_lease([_failover(102.0)], later, v)
    adopted_within_lease([_failover(None)], CLAIMS, v)
    assert v.findings == []
