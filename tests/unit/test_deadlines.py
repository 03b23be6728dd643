"""DeadlineWatch: a task is re-queued only when the database's clock and the reconciler's own
monotonic clock both say its deadline passed."""

from __future__ import annotations

import uuid

import pytest

from regionmesh.models.runs import RunningTask
from regionmesh.workers.deadlines import DeadlineWatch

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


def task(past: bool, *, task_id: uuid.UUID = A, attempt: int = 1, timeout_s: float = 10.0) -> RunningTask:
    return RunningTask(task_id, attempt, 3, timeout_s, past)


@pytest.mark.parametrize(("past", "watched_s", "expired"), [
    (False, 0.0, False),
    (False, 100.0, False),  # our clock says long, the database's says not yet (a backward step): wait
    (True, 0.0, False),     # the database's clock jumped forward: not before we watched it ourselves
    (True, 14.9, False),
    (True, 15.0, True),     # timeout 10 + slack 5
    (True, 60.0, True),
])
def test_both_clocks_must_agree(past: bool, watched_s: float, expired: bool) -> None:
    watch = DeadlineWatch(slack_s=5.0)
    assert watch.expired([task(False)], now=1000.0) == []  # first seen
    assert (watch.expired([task(past)], now=1000.0 + watched_s) == [task(past)]) is expired


def test_a_forward_step_of_the_database_clock_does_not_expire_a_task_claimed_just_now() -> None:
    watch = DeadlineWatch(slack_s=0.5)
    assert watch.expired([task(True, timeout_s=20)], now=5.0) == []
    assert watch.expired([task(True, timeout_s=20)], now=24.0) == []
    assert watch.expired([task(True, timeout_s=20)], now=25.5) == [task(True, timeout_s=20)]


def test_a_new_attempt_is_watched_from_when_it_is_first_seen() -> None:
    watch = DeadlineWatch(slack_s=1.0)
    watch.expired([task(False, attempt=1)], now=0.0)
    # attempt 1 ended and attempt 2 was claimed: its watch starts now, not with attempt 1's
    assert watch.expired([task(True, attempt=2)], now=50.0) == []
    assert watch.expired([task(True, attempt=2)], now=61.0) == [task(True, attempt=2)]


def test_tasks_no_longer_running_are_forgotten() -> None:
    watch = DeadlineWatch(slack_s=1.0)
    watch.expired([task(False, task_id=A), task(False, task_id=B)], now=0.0)
    watch.expired([task(False, task_id=B)], now=1.0)
    assert set(watch._since) == {(B, 1)}
    # A comes back (requeued elsewhere, claimed again with the same attempt number): watched afresh
    assert watch.expired([task(True, task_id=A)], now=100.0) == []
