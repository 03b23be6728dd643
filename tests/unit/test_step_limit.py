"""The step limit (workers/step_limit.py): StepTimeout at the timeout, a handler that catches it
still timed out, and at the timeout plus the grace the watchdog records the overrun, then ends the
process (here a stand-in for SIGKILL that records the call)."""

from __future__ import annotations

import threading
import time

import pytest

from regionmesh.workers.step_limit import StepLimit, StepTimeout


class Ends:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ended = threading.Event()

    def overrun(self) -> None:
        self.calls.append("overrun")

    def end(self) -> None:
        self.calls.append("end")
        self.ended.set()


def swallow_for(seconds: float, stop: threading.Event | None = None) -> int:
    """A handler that catches everything, StepTimeout included; returns how many it swallowed."""
    caught = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        try:
            threading.Event().wait(0.01)
        except Exception:
            caught += 1
    return caught


def test_the_soft_end_raises_step_timeout_in_the_handler() -> None:
    ends = Ends()
    with pytest.raises(StepTimeout, match="timed out after 0.1s"):
        with StepLimit(0.1, started=time.monotonic(), grace_s=5.0, on_overrun=ends.overrun, end=ends.end):
            threading.Event().wait(2.0)
    time.sleep(0.1)
    assert ends.calls == []  # finished in time: the watchdog does nothing


def test_a_handler_that_catches_the_timeout_and_returns_still_timed_out() -> None:
    ends = Ends()
    with StepLimit(0.1, started=time.monotonic(), grace_s=5.0, on_overrun=ends.overrun, end=ends.end) as limit:
        assert swallow_for(0.3) == 1
    assert limit.fired and ends.calls == []


def test_a_handler_that_runs_on_past_the_grace_is_recorded_then_its_process_ended() -> None:
    ends = Ends()
    began = time.monotonic()
    with StepLimit(0.1, started=began, grace_s=0.1, on_overrun=ends.overrun, end=ends.end) as limit:
        swallow_for(5.0, stop=ends.ended)
    assert ends.calls == ["overrun", "end"]  # recorded first, then ended
    assert 0.2 <= time.monotonic() - began < 1.0 and limit.fired


def test_the_limit_counts_from_before_the_claim() -> None:
    ends = Ends()
    with pytest.raises(StepTimeout):  # the claim took the whole timeout: the handler gets none of it
        with StepLimit(1.0, started=time.monotonic() - 1.5, grace_s=5.0, on_overrun=ends.overrun, end=ends.end):
            threading.Event().wait(1.0)
    time.sleep(0.1)
    assert ends.calls == []


def test_without_a_hard_end_nothing_is_ended() -> None:
    with StepLimit(0.05, started=time.monotonic(), grace_s=0.05, on_overrun=None) as limit:
        swallow_for(0.3)
    assert limit.fired


def test_outside_the_main_thread_there_is_no_limit() -> None:
    ends = Ends()
    fired: list[bool] = []

    def run() -> None:
        with StepLimit(0.05, started=time.monotonic(), grace_s=0.05, on_overrun=ends.overrun, end=ends.end) as limit:
            threading.Event().wait(0.3)
        fired.append(limit.fired)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    assert fired == [False] and ends.calls == []
