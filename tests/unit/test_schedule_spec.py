"""When ticks fall (DST included, simulated time with zoneinfo), which a pass fires, their keys,
and the waiting steps' names: pure logic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.errors import InvalidSchedule
from regionmesh.workers.definitions import Registry, Step, Workflow
from regionmesh.workers.schedule_spec import (
    MAX_TICKS_PER_PASS,
    ON_TIME_S,
    Spec,
    jitter_offset,
    overlap_action,
    parse_every,
    plan,
    run_key,
)
from regionmesh.workers.signal_task import BadSignal, parse_signal
from regionmesh.workers.submission import run_id_for
from regionmesh.workers.waits import Sleep, SleepUntil, WaitFor, install

pytestmark = pytest.mark.unit


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_berlin_daily_tick_in_the_skipped_hour_fires_once_shifted_by_the_gap() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not happen that day.
    spec = Spec(cron="30 2 * * *", tz="Europe/Berlin")
    ticks = spec.next_ticks(utc(2026, 3, 27), 4)
    assert ticks == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30),
                     utc(2026, 3, 29, 1, 30),  # 03:30 CEST: later by the one-hour gap
                     utc(2026, 3, 30, 0, 30)]


def test_a_berlin_daily_tick_in_the_repeated_hour_fires_once_at_the_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC). 02:30 happens at 00:30 and 01:30 UTC.
    spec = Spec(cron="30 2 * * *", tz="Europe/Berlin")
    ticks = spec.next_ticks(utc(2026, 10, 24, 12), 2)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # Asked from inside the second occurrence, the first is not fired again.
    assert spec.next_ticks(utc(2026, 10, 25, 1, 15), 1) == [utc(2026, 10, 26, 1, 30)]


def test_half_hourly_ticks_across_both_transitions_are_distinct_and_in_order() -> None:
    spec = Spec(cron="*/30 * * * *", tz="Europe/Berlin")
    spring = spec.next_ticks(utc(2026, 3, 28, 23, 50), 6)
    # 01:00, 01:30 CET; 02:00, 02:30 (skipped) -> 03:00, 03:30 CEST, which are also real ticks: merged.
    assert spring == [utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0),
                      utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 0), utc(2026, 3, 29, 2, 30)]
    autumn = spec.next_ticks(utc(2026, 10, 24, 23, 0), 5)
    # 01:30, 02:00, 02:30 CEST; the repeated 02:00 and 02:30 CET are not ticks; then 03:00 CET.
    assert autumn == [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30),
                      utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 30)]


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)),
       st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC"]),
       st.sampled_from(["*/15 * * * *", "30 2 * * *", "0 * * * 0", "45 1 * * *"]))
def test_ticks_strictly_increase_and_resuming_from_any_tick_gives_the_same_sequence(
        start: datetime, tz: str, cron: str) -> None:
    spec = Spec(cron=cron, tz=tz)
    ticks = spec.next_ticks(start.replace(tzinfo=UTC), 6)
    assert all(a < b for a, b in zip(ticks, ticks[1:], strict=False))
    assert spec.next_ticks(ticks[2], 3) == ticks[3:6]  # a region resuming from a recorded tick


def test_interval_ticks_are_multiples_since_the_epoch_the_same_in_every_region() -> None:
    assert Spec(every_s=5).next_ticks(utc(2026, 12, 7, 13, 0, 3), 2) == [utc(2026, 12, 7, 13, 0, 5),
                                                                        utc(2026, 12, 7, 13, 0, 10)]
    assert Spec(every_s=5).next_ticks(utc(2026, 12, 7, 13, 0, 5), 1) == [utc(2026, 12, 7, 13, 0, 10)]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("7", 7)])
def test_parse_every(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize(("spec", "problem"), [
    (Spec(), "exactly one of --cron or --every"),
    (Spec(cron="* * * * *", every_s=5), "exactly one"),
    (Spec(cron="61 * * * *"), "--cron"),
    (Spec(cron="0 2 * * *", tz="Mars/Olympus"), "IANA"),
    (Spec(every_s=0.5), "whole number"),
    (Spec(every_s=60, tz="Europe/Berlin"), "--tz applies to --cron only"),
    (Spec(every_s=60, jitter_s=-1), "--jitter"),
])
def test_bad_specs_are_refused_with_what_to_fix(spec: Spec, problem: str) -> None:
    with pytest.raises(InvalidSchedule, match=problem):
        spec.validate()
    with pytest.raises(InvalidSchedule):
        parse_every("5 minutes")


def test_a_ticks_key_and_run_id_depend_on_the_schedule_and_instant_only() -> None:
    tick = utc(2026, 12, 7, 2, 0)
    assert run_key("nightly", tick) == "rm-schedule:nightly:2026-12-07T02:00:00Z"
    # The same instant seen through another zone is the same key: the same run everywhere.
    same = tick.astimezone(Spec(cron="0 3 * * *", tz="Europe/Berlin").next_ticks(tick, 1)[0].tzinfo)
    assert run_id_for("t1", run_key("nightly", same)) == run_id_for("t1", run_key("nightly", tick))
    assert run_key("nightly", tick + timedelta(seconds=5)) != run_key("nightly", tick)


def test_jitter_is_fixed_per_tick_and_within_bounds() -> None:
    tick = utc(2026, 12, 7, 2, 0)
    a = jitter_offset("t1", "nightly", tick, 30.0)
    assert a == jitter_offset("t1", "nightly", tick, 30.0) and 0 <= a < 30
    assert jitter_offset("t1", "nightly", tick, 0.0) == 0.0
    assert len({jitter_offset("t1", "n", tick + timedelta(minutes=i), 30.0) for i in range(20)}) == 20


def test_catch_up_policies() -> None:
    now = utc(2026, 12, 7, 12, 0)
    due = [now - timedelta(minutes=m) for m in (30, 20, 10, 0)]
    assert plan(due, now, "all").fire == tuple(due)
    latest = plan(due, now, "latest")
    assert latest.fire == (due[-1],) and latest.skipped == tuple(due[:-1]) and latest.last == due[-1]
    none = plan(due, now, "none")
    assert none.fire == (due[-1],) and none.last == due[-1]
    late = now - timedelta(seconds=ON_TIME_S + 1)
    assert plan([late], now, "none").fire == () and plan([late], now, "none").last == late
    # A jitter delays firing, not lateness: a tick fired late by its own jitter is on time.
    assert plan([late], now, "none", jitter=[5.0]).fire == (late,)
    many = [now - timedelta(seconds=s) for s in range(500, 0, -1)]
    assert len(plan(many, now, "all").fire) == MAX_TICKS_PER_PASS
    assert plan([], now, "all").last is None


@pytest.mark.parametrize(("policy", "running", "action"), [
    ("skip", True, "skip"), ("buffer_one", True, "buffer"), ("allow", True, "fire"),
    ("skip", False, "fire"), ("buffer_one", False, "fire"), ("allow", False, "fire"),
])
def test_overlap(policy: str, running: bool, action: str) -> None:
    assert overlap_action(policy, running) == action


def test_waiting_steps_validate_as_steps_of_a_workflow_and_resolve_to_handlers() -> None:
    registry = Registry()
    install(registry.handlers)
    registry.handler("h")(lambda ctx, p: p)
    wf = registry.register(Workflow("approve", steps=(
        Step("a", "h"), Sleep("pause", 30, ("a",)), WaitFor("ok", "approved", 86400, ("pause",)),
        SleepUntil("until", datetime(2027, 1, 1, tzinfo=UTC), ("ok",)))))
    assert [s.handler for s in wf.steps[1:]] == ["regionmesh.sleep:30", "regionmesh.wait_for:approved:86400",
                                                 "regionmesh.sleep_until:2027-01-01T00:00:00.000000Z"]
    assert all(registry.handlers.get(s.handler) is not None for s in wf.steps)
    assert registry.handlers.get("regionmesh.sleep:-1") is None and "regionmesh.wait_for:a b:5" not in registry.handlers
    with pytest.raises(ValueError, match="timezone-aware"):
        SleepUntil("x", datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="signal name"):
        WaitFor("x", "no:colons", 5)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"tenant_id": "t 1", "run_id": str(uuid.uuid4()), "name": "ok"}, "tenant_id"),
    ({"tenant_id": "t1", "run_id": str(uuid.uuid4()), "name": "no:colons"}, "name"),
    ({"tenant_id": "t1", "run_id": "nope", "name": "ok"}, "not a UUID"),
    ({"tenant_id": "t1", "name": "ok"}, "give run_id"),
    ({"tenant_id": "t1", "run_id": str(uuid.uuid4()), "name": "ok", "payload": float("nan")}, "not JSON"),
    ({"tenant_id": "t1", "run_id": str(uuid.uuid4()), "name": "ok", "payload": "x" * 100}, "exceeds"),
    ({"tenant_id": "t1", "run_id": str(uuid.uuid4()), "name": "ok", "payload": "a\x00b"}, "NUL"),
    ({"tenant_id": "t1", "run_id": str(uuid.uuid4()), "name": "ok", "key": ""}, "key"),
])
def test_a_bad_signal_is_refused_with_its_reason(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(BadSignal, match=problem):
        parse_signal(kwargs, default_key="task-id", max_bytes=64)


def test_a_signal_names_its_run_by_id_or_by_the_runs_key_and_defaults_its_key_to_the_task_id() -> None:
    by_key = parse_signal({"tenant_id": "t1", "idempotency_key": "order-1", "name": "approved"},
                          default_key="task-id", max_bytes=64)
    assert by_key["run_id"] == run_id_for("t1", "order-1") and by_key["key"] == "task-id"
    assert by_key["payload"] is None
