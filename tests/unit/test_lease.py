"""The lease rules: majority, lease end from send times, promises, failover readiness. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.workers.lease import (
    LeaseParams,
    answering,
    episode_expired,
    expired_needed,
    failover_ready,
    held_until_db,
    lease_end,
    majority,
    promise_over,
    should_grant,
)
from regionmesh.workers.lifecycle import route

P = LeaseParams(lease_s=10.0, drift=0.01, margin_s=1.0)


@pytest.mark.parametrize(("voters", "need", "expired"), [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 3, 2), (5, 3, 3)])
def test_majority_and_how_many_must_expire_to_deny_one(voters: int, need: int, expired: int) -> None:
    assert majority(voters) == need
    assert expired_needed(voters) == expired
    # Whoever is left after `expired` grantors stopped (the holder included) is short of a majority.
    assert voters - expired < majority(voters)


def test_lease_runs_from_the_send_time_of_the_majoritys_oldest_needed_beat() -> None:
    sent = {1: 100.0, 2: 101.0, 3: 102.0}
    # Self granted beat 3; a peer acknowledged beat 1 only: the majority of 3 is {self, peer}.
    end, by = lease_end(sent, 3, {"eu-west": 1}, 3, P)
    assert end == 110.0 and by == ["eu-west"]
    # A second peer acknowledging beat 2 makes the lease start from beat 2.
    end, by = lease_end(sent, 3, {"eu-west": 1, "ap-south": 2}, 3, P)
    assert end == 111.0 and by == ["ap-south"]


def test_no_majority_no_lease_and_unknown_beats_count_for_nothing() -> None:
    sent = {5: 50.0}
    assert lease_end(sent, 5, {}, 3, P) == (None, [])
    # A grant of a beat this keeper never sent (a previous keeper's) is not evidence.
    assert lease_end(sent, 5, {"eu-west": 4}, 3, P) == (None, [])
    # A two-region mesh needs both.
    assert lease_end(sent, 5, {}, 2, P)[0] is None
    assert lease_end(sent, 5, {"b": 5}, 2, P)[0] == 60.0


@given(st.floats(0, 1e6), st.floats(0, 100), st.floats(0.0, 0.1), st.floats(0, 5))
def test_the_holders_lease_ends_before_any_grantors_promise(send: float, delay: float, drift: float,
                                                             margin: float) -> None:
    params = LeaseParams(lease_s=10.0, drift=drift, margin_s=margin)
    end, _ = lease_end({1: send}, 1, {"g": 1}, 2, params)
    assert end is not None
    grant = send + delay  # the grantor acknowledged after the holder sent (real time)
    # The grantor's clock may run slower by up to drift: its promise spans promise_s of its time,
    # at least promise_s / (1 + drift) of real time.
    promise_real_end = grant + params.promise_s / (1 + drift)
    assert end <= promise_real_end + 1e-6


def test_promise_and_grant_decisions() -> None:
    assert not promise_over(100.0, 110.9, P) and promise_over(100.0, 111.2, P)
    assert should_grant("active") and should_grant("draining") and should_grant(None)
    assert not should_grant("failing_over") and not should_grant("failed_over")
    assert not should_grant("active", manually_fenced=True)


def test_failover_ready_counts_expired_grantors_only() -> None:
    assert failover_ready({"b": "expired", "c": "withheld"}, 3) == (False, 1)
    assert failover_ready({"b": "expired", "c": "expired"}, 3) == (True, 0)
    assert failover_ready({"b": "granting"}, 2) == (False, 1)
    assert failover_ready({"b": "expired"}, 2) == (True, 0)


def test_db_time_of_the_lease_end_errs_early() -> None:
    db_read = datetime(2026, 1, 1, tzinfo=UTC)
    # The keeper read the database clock, then its monotonic clock said 50.0; the lease ends at 56.0.
    assert held_until_db(db_read.timestamp(), 56.0, 50.0) == db_read.timestamp() + 6.0
    assert db_read + timedelta(seconds=6) == datetime.fromtimestamp(db_read.timestamp() + 6.0, UTC)


@pytest.mark.parametrize(("placed", "hops", "decision"), [
    ("us-east", 0, "create"), ("us-east", 99, "create"), ("eu-west", 0, "forward"), ("eu-west", 2, "forward"),
    ("eu-west", 3, "hold"), ("eu-west", 99, "hold"),
])
def test_a_submission_never_starts_off_its_home(placed: str, hops: int, decision: str) -> None:
    assert route(placed, "us-east", hops) == decision


def test_an_expiry_from_an_earlier_failover_does_not_count() -> None:
    """Issue 21 item 4: c's ``expired`` answers episode 2 (the first failover of the holder); the
    failover at episode 5 counts only b's."""
    rows = {"b": ("expired", 5), "c": ("expired", 2), "d": ("withheld", 5), "e": ("granting", 4)}
    states = answering(rows, 5)
    assert states == {"b": "expired", "c": "expired earlier", "d": "withheld", "e": "granting"}
    assert failover_ready(states, 5) == (False, 2)
    assert failover_ready(answering(rows, 2), 5) == (False, 2)  # only c answered episode 2
    assert failover_ready(answering({"b": ("expired", 5), "c": ("expired", 5)}, 5), 3) == (True, 0)


@pytest.mark.parametrize(("row", "answered", "episode", "again"), [
    ((7, "expired"), 2, 5, True),  # no grant since it expired: it expires for this episode too
    ((7, "expired"), 5, 5, False),  # already answered
    ((7, "withheld"), 2, 5, False),  # a promise still to wait out
    ((7, "granting"), 2, 5, False),
    (None, 0, 5, False),  # never granted: written by the 'never granted' rule
])
def test_an_expired_row_answers_a_new_episode_without_waiting(row: tuple[int, str] | None, answered: int,
                                                               episode: int, again: bool) -> None:
    assert episode_expired(row, answered, episode) is again
