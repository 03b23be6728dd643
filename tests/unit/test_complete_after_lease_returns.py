"""A completion refused for want of lease is tried again when the lease came back between the
refusal and the look at it (campaign seed 27: discarded 30 ms after the region's lease returned,
the step ran again a minute later), and only while the task is still this attempt's."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from regionmesh.models import runs
from regionmesh.workers import executor

CLAIM = SimpleNamespace(task_id=uuid.uuid4(), attempt=1)
RT = SimpleNamespace(engine=None, region="a", worker_id="w")


def _complete(monkeypatch: pytest.MonkeyPatch, results: list[bool], still: list[bool], lapsed: list[bool]) -> tuple[Any, int]:
    calls = {"n": 0}

    def complete_and_claim(*_a: Any, **_k: Any) -> runs.Completion:
        calls["n"] += 1
        return runs.Completion(results.pop(0), [], None)

    monkeypatch.setattr(runs, "complete_and_claim", complete_and_claim)
    monkeypatch.setattr(runs, "still_running", lambda *_a: still.pop(0) if still else False)
    monkeypatch.setattr(executor, "_lease_may_return", lambda _rt: lapsed.pop(0) if lapsed else False)
    done = executor._complete(RT, CLAIM, {"ok": 1}, claim_next=False,  # type: ignore[arg-type]
                              until=time.monotonic() + 30, fields={})
    return done, calls["n"]


def test_refused_while_lapsed_then_renewed_before_the_look_commits_on_the_next_try(monkeypatch: pytest.MonkeyPatch) -> None:
    # refused (lapsed: wait), refused again, and by the look the keeper had renewed it
    done, n = _complete(monkeypatch, results=[True, True, False], still=[True], lapsed=[True, False])
    assert not done.discarded and n == 3


def test_a_task_no_longer_this_attempts_is_left_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    done, n = _complete(monkeypatch, results=[True], still=[False], lapsed=[False])
    assert done.discarded and n == 1


def test_tries_again_at_most_a_few_times_while_the_lease_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    done, n = _complete(monkeypatch, results=[True] * 10, still=[True] * 10, lapsed=[])
    assert done.discarded and n == executor.RENEWED_LEASE_TRIES + 1
