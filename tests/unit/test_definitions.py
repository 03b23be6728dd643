"""DAG validation, decomposition, retry policy and submission parsing: pure logic."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.errors import InvalidWorkflow, RejectedSubmission, UnknownWorkflow
from regionmesh.workers.definitions import Registry, RetryPolicy, Step, Workflow, find_cycle, validate
from regionmesh.workers.retry import backoff_s, should_retry
from regionmesh.workers.submission import RUN_NAMESPACE, parse_submission, run_id_for

HANDLERS = {"h": lambda ctx, p: p}


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ((), "it has no steps"),
        ((Step("a", "h"), Step("a", "h")), "duplicate step name 'a'"),
        ((Step("a", "h", depends_on=("zz",)),), "depends on unknown step 'zz'"),
        ((Step("a", "nope"),), "unknown handler 'nope'"),
        ((Step("a", "h"), Step("b", "h", depends_on=("a", "a"))), "lists a dependency twice"),
        ((Step("a", "h", depends_on=("b",)), Step("b", "h", depends_on=("a",))), "cycle: a -> b -> a"),
        ((Step("a", "h", depends_on=("a",)),), "cycle: a -> a"),
        ((Step("a", "h"), Step("m", "h", depends_on=("a",), map_over="x.items")), "maps over 'x'"),
        ((Step("bad key", "h"),), "step key 'bad key' is invalid"),
        ((Step("a", "h", retry=RetryPolicy(max_attempts=0)),), "invalid retry policy"),
        ((Step("a", "h", timeout_s=0),), "non-positive timeout"),
        ((Step("a", "h", timeout_s=7200),), "below the broker visibility timeout"),
    ],
)
def test_invalid_dags_are_refused_with_the_reason(steps: tuple[Step, ...], problem: str) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        validate("wf", steps, HANDLERS)
    assert problem in info.value.problem
    assert info.value.workflow == "wf"


def test_valid_dag_with_map_passes() -> None:
    validate("wf", (Step("a", "h"), Step("m", "h", depends_on=("a",), map_over="a.items"),
                    Step("z", "h", depends_on=("m", "a"))), HANDLERS)
    assert Step("m", "h", map_over="a.items").map_source == ("a", "items")
    assert Step("m", "h", map_over="a").map_source == ("a", None)


def test_find_cycle_on_longer_cycle() -> None:
    steps = (Step("a", "h", depends_on=("c",)), Step("b", "h", depends_on=("a",)), Step("c", "h", depends_on=("b",)),
             Step("d", "h"))
    cycle = find_cycle(steps)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_registry_validates_static_dags_at_registration_and_decomposers_per_run() -> None:
    reg = Registry()
    reg.handler("h")(lambda ctx, p: p)
    with pytest.raises(InvalidWorkflow):
        reg.register(Workflow("bad", steps=(Step("a", "missing"),)))
    assert "bad" not in reg.workflows

    def decompose(goal: str, data: Any) -> list[Step]:
        assert goal == "do it"
        return [Step(n, "h") for n in data["names"]]

    wf = reg.register(Workflow("dyn", decomposer=decompose, goal="do it"))
    assert [s.key for s in wf.decompose({"names": ["x", "y"]}, reg.handlers)] == ["x", "y"]
    with pytest.raises(InvalidWorkflow, match="duplicate step name 'x'"):
        wf.decompose({"names": ["x", "x"]}, reg.handlers)
    with pytest.raises(InvalidWorkflow, match="decomposer raised KeyError"):
        wf.decompose({}, reg.handlers)
    with pytest.raises(UnknownWorkflow, match="known: dyn"):
        reg.get("nope")


@given(attempt=st.integers(1, 30), jitter=st.floats(0, 1, exclude_max=True),
       base=st.floats(0.01, 10), cap=st.floats(10, 600))
def test_backoff_is_bounded_and_grows(attempt: int, jitter: float, base: float, cap: float) -> None:
    policy = RetryPolicy(max_attempts=5, base_s=base, max_s=cap)
    delay = backoff_s(policy, attempt, jitter)
    raw = min(cap, base * 2 ** (attempt - 1))
    assert raw * 0.5 <= delay <= raw
    assert backoff_s(policy, attempt + 1, jitter) >= delay  # never shrinks for the same jitter


def test_should_retry_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [should_retry(policy, n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    with pytest.raises(ValueError):
        backoff_s(policy, 0, 0.5)


def test_run_id_is_uuid5_of_tenant_and_key() -> None:
    assert run_id_for("acme", "k1") == uuid.uuid5(RUN_NAMESPACE, "acme\x1fk1")
    assert run_id_for("acme", "k1") == run_id_for("acme", "k1")
    assert run_id_for("acme", "k1") != run_id_for("acme2", "k1")
    # The separator keeps ("a", "b:c") and ("a:b", "c") apart.
    assert run_id_for("a", "b:c") != run_id_for("a:b", "c")


def test_submission_defaults_key_to_submission_id() -> None:
    sub = parse_submission({"tenant_id": "t", "workflow": "w", "input": {}, "submission_id": "s1"}, max_input_bytes=100)
    assert sub.idempotency_key == "s1" and sub.run_id == run_id_for("t", "s1")
    keyed = parse_submission({"tenant_id": "t", "workflow": "w", "input": {}, "idempotency_key": "k", "submission_id": "s"},
                             max_input_bytes=100)
    assert keyed.idempotency_key == "k" and keyed.submission_id == "s"
    assert keyed.message()["idempotency_key"] == "k"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"workflow": "w", "input": {}, "submission_id": "s"}, "missing field(s): tenant_id"),
        ({"tenant_id": "t", "input": {}, "submission_id": "s"}, "missing field(s): workflow"),
        ({"tenant_id": "a/b", "workflow": "w", "input": {}, "submission_id": "s"}, "must match"),
        ({"tenant_id": 5, "workflow": "w", "input": {}, "submission_id": "s"}, "must match"),
        ({"tenant_id": "t", "workflow": "", "input": {}, "submission_id": "s"}, "non-empty string"),
        ({"tenant_id": "t", "workflow": "w", "input": "x", "submission_id": "s"}, "JSON object"),
        ({"tenant_id": "t", "workflow": "w", "input": {"a": "x" * 200}, "submission_id": "s"}, "over the limit of 100"),
        ({"tenant_id": "t", "workflow": "w", "input": {}}, "must stamp a submission_id"),
        ({"tenant_id": "t", "workflow": "w", "input": {}, "idempotency_key": "k" * 300}, "longer than 256"),
        ({"tenant_id": "t", "workflow": "w", "input": {}, "submission_id": "s", "v": 2}, "unsupported message version"),
    ],
)
def test_bad_submissions_are_rejected_with_reason(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedSubmission) as info:
        parse_submission(payload, max_input_bytes=100)
    assert reason in info.value.reason
