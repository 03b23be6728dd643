"""Outbox and forwarding decisions, rejection notices, retry/backoff properties and run planning: pure."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.backoff import compute_backoff
from regionmesh.errors import RejectedSubmission
from regionmesh.workers.definitions import Registry, RetryPolicy, Step, Workflow
from regionmesh.workers.forward import MAX_SENDS, RejectionNotice, next_action, outgoing, parse_notice
from regionmesh.workers.retry import backoff_s, should_retry
from regionmesh.workers.submission import parse_submission, plan_run, run_id_for

REGIONS = {"us-east", "eu-west", "ap-south"}


@pytest.mark.parametrize(
    ("entry", "target", "down", "action"),
    [
        ({"sent": False, "sends": 0}, "eu-west", set(), "send"),
        ({"sent": False, "sends": 0}, "us-east", set(), "send_local"),
        ({"sent": False, "sends": 0}, "eu-west", {"eu-west"}, "skip"),
        ({"sent": True, "sends": MAX_SENDS - 1}, "eu-west", set(), "send"),
        ({"sent": True, "sends": MAX_SENDS}, "eu-west", set(), "give_up"),
        ({"sent": True, "sends": MAX_SENDS}, "eu-west", {"eu-west"}, "give_up"),
        # Unsent (the home broker is unreachable): kept trying, however often it failed.
        ({"sent": False, "sends": MAX_SENDS * 5}, "eu-west", set(), "send"),
    ],
)
def test_what_to_do_with_a_kept_entry(entry: dict[str, Any], target: str, down: set[str], action: str) -> None:
    assert next_action(entry, target, here="us-east", down=down) == action


@given(sends=st.integers(0, 100), sent=st.booleans(), cap=st.integers(1, 50))
def test_a_sent_entry_is_never_sent_more_than_the_cap(sends: int, sent: bool, cap: int) -> None:
    action = next_action({"sent": sent, "sends": sends}, "eu-west", here="us-east", down=set(), max_sends=cap)
    assert (action == "give_up") == (sent and sends >= cap)


@pytest.mark.parametrize(("hops", "sent_hops"), [(None, 1), (0, 1), (2, 3), ("4", 5)])
def test_a_forwarded_message_counts_one_hop_more_and_names_the_forwarder(hops: Any, sent_hops: int) -> None:
    received = {"tenant_id": "t1", "submission_id": "s-1", "workflow": "w", "input": {"a": 1}}
    if hops is not None:
        received["hops"] = hops
    before = dict(received)
    out = outgoing(received, "us-east", "eu-west")
    assert out.message == {**received, "hops": sent_hops, "forwarded_by": "us-east"}
    assert received == before  # the message as received is not changed
    assert out.log == {"region": "us-east", "tenant": "t1", "home": "eu-west", "submission": "s-1"}


def notice(**change: Any) -> dict[str, Any]:
    base = {"region": "eu-west", "reason": "unknown workflow 'nope'", "submission_id": "s-1",
            "run_id": str(run_id_for("t1", "k")), "tenant_id": "t1"}
    return base | change


def test_a_rejection_notice_round_trips() -> None:
    parsed = parse_notice(notice(), REGIONS)
    assert parsed == RejectionNotice("eu-west", "unknown workflow 'nope'", "s-1", run_id_for("t1", "k"), "t1")
    assert parse_notice(parsed.message(), REGIONS) == parsed


@pytest.mark.parametrize(
    "change",
    [
        {"region": "mars"}, {"region": None}, {"region": "eu-west\n"},
        {"reason": 5}, {"reason": "a\nforged=1"}, {"reason": "a\x00"},
        {"submission_id": "a b"}, {"submission_id": 3},
        {"run_id": "not-a-uuid"},
        {"tenant_id": "t\n"},
        {"run_id": None, "submission_id": None},
    ],
)
def test_malformed_notices_are_refused(change: dict[str, Any]) -> None:
    assert parse_notice(notice(**change), REGIONS) is None


def test_a_notice_needs_only_one_of_run_id_and_submission_id() -> None:
    only_sid = parse_notice(notice(run_id=None), REGIONS)
    assert only_sid is not None and only_sid.run_id is None
    only_run = parse_notice(notice(submission_id=None), REGIONS)
    assert only_run is not None and only_run.run_id == uuid.UUID(notice()["run_id"])


# Retry and backoff: the one formula and the step policy.

@given(attempt=st.integers(1, 10_000), base=st.floats(0, 100), cap=st.floats(0, 3600),
       jitter=st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_half_and_all_of_the_capped_exponential(attempt: int, base: float, cap: float,
                                                                     jitter: float) -> None:
    delay = compute_backoff(attempt, base_s=base, max_s=cap, jitter=jitter)
    raw = min(cap, base * 2.0 ** min(attempt - 1, 62))
    assert raw * 0.5 <= delay <= raw + 1e-9
    assert delay <= cap + 1e-9


@given(attempt=st.integers(1, 200), j1=st.floats(0, 1, exclude_max=True), j2=st.floats(0, 1, exclude_max=True))
def test_more_jitter_never_means_less_delay(attempt: int, j1: float, j2: float) -> None:
    lo, hi = sorted((j1, j2))
    assert compute_backoff(attempt, base_s=0.5, max_s=30, jitter=lo) <= compute_backoff(attempt, base_s=0.5, max_s=30,
                                                                                          jitter=hi)


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)])
def test_backoff_refuses_out_of_range_arguments(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        compute_backoff(attempt, base_s=1, max_s=10, jitter=jitter)


@given(max_attempts=st.integers(1, 20), attempt=st.integers(1, 40))
def test_retries_stop_exactly_at_max_attempts(max_attempts: int, attempt: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    assert should_retry(policy, attempt) == (attempt < max_attempts)
    assert backoff_s(policy, attempt, 0.0) == pytest.approx(0.5 * min(policy.max_s, policy.base_s * 2 ** (attempt - 1)))


# Run planning.

def registry() -> Registry:
    reg = Registry()
    reg.handler("h")(lambda ctx, p: p)
    reg.register(Workflow("static", steps=(Step("a", "h"), Step("b", "h", depends_on=("a",),
                                                                      retry=RetryPolicy(4, 1.0, 8.0)))))

    def decompose(goal: str, data: Any) -> list[Step]:
        return [Step(n, "h") for n in data["names"]]

    reg.register(Workflow("dyn", decomposer=decompose))
    return reg


def sub(workflow: str, data: dict[str, Any]) -> Any:
    return parse_submission({"tenant_id": "t1", "workflow": workflow, "input": data, "idempotency_key": "k",
                             "submission_id": "s-1", "submitted_region": "eu-west"}, max_input_bytes=1 << 20)


def test_plan_run_gives_the_run_row_and_its_steps() -> None:
    run, steps = plan_run(sub("static", {"x": 1}), registry(), region="us-east", epoch=3)
    assert run == {"id": str(run_id_for("t1", "k")), "tenant_id": "t1", "idempotency_key": "k", "workflow": "static",
                   "input": {"x": 1}, "status": "running", "owner_region": "us-east", "submission_id": "s-1",
                   "submitted_region": "eu-west", "epoch": 3}
    assert [(s["key"], s["depends_on"], s["max_attempts"], s["backoff_base_s"], s["backoff_max_s"]) for s in steps] == [
        ("a", [], 3, 0.5, 30.0), ("b", ["a"], 4, 1.0, 8.0)]


def test_plan_run_records_an_invalid_dag_as_a_failed_run_without_steps() -> None:
    run, steps = plan_run(sub("dyn", {"names": ["x", "x"]}), registry(), region="us-east")
    assert run["status"] == "failed" and "duplicate step name 'x'" in run["error"] and steps == []
    run, steps = plan_run(sub("dyn", {"names": ["x\n"]}), registry(), region="us-east")
    assert run["status"] == "failed" and "is invalid" in run["error"] and steps == []


def test_plan_run_rejects_an_unknown_workflow_with_the_submission_ids() -> None:
    with pytest.raises(RejectedSubmission) as info:
        plan_run(sub("nope", {}), registry(), region="us-east")
    assert "unknown workflow 'nope'" in info.value.reason
    assert (info.value.submission_id, info.value.tenant_id) == ("s-1", "t1")


def _kombu_item(kwargs: dict[str, object]) -> str:
    import base64 as b64
    import json as js

    body = b64.b64encode(js.dumps([[], kwargs, {"callbacks": None}]).encode()).decode()
    return js.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                     "headers": {"task": "regionmesh.run_step.v1"}, "properties": {"body_encoding": "base64"}})


def test_message_kwargs_reads_queue_and_unacked_elements_and_refuses_junk() -> None:
    import json as js

    from regionmesh.broker import message_kwargs

    item = _kombu_item({"task_id": "t-1"})
    assert message_kwargs(item) == {"task_id": "t-1"}
    assert message_kwargs(js.dumps([js.loads(item), "", "rm.us-east.steps"])) == {"task_id": "t-1"}
    for junk in ("", "5", "null", '{"body": "%%%"}', js.dumps({"body": js.dumps([1]), "properties": {}})):
        assert message_kwargs(junk) is None
