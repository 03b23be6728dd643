"""Which region may inherit a failed region's runs (routing/succession.py): a peer further along the
victim's WAL refuses the heir only when it holds work of the victim the heir lacks. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.routing.succession import (
    Missing,
    RunView,
    TaskView,
    ahead,
    lsn_value,
    missing_work,
    refusal,
)

pytestmark = pytest.mark.unit

A = "eu-west"


def run(status: str = "running", owner: str = A, **tasks: tuple[str, int]) -> RunView:
    return RunView(owner, status, {k: TaskView(k, None, st_, att) for k, (st_, att) in tasks.items()})


@pytest.mark.parametrize(("text", "value"), [("0/0", 0), ("0/1A", 26), ("1/0", 1 << 32), ("16/B374D848", 0x16B374D848)])
def test_lsn_value(text: str, value: int) -> None:
    assert lsn_value(text) == value


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_lsn_order_is_the_numbers_order(a: int, b: int) -> None:
    def t(v: int) -> str:
        return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"
    assert (lsn_value(t(a)) < lsn_value(t(b))) == (a < b)


def test_not_an_lsn_is_an_error() -> None:
    with pytest.raises(ValueError):
        lsn_value("12345")


@pytest.mark.parametrize(("heir", "peers", "expected"), [
    ("0/100", {"c": "0/100", "d": "0/F0"}, {}),            # the heir is the furthest (ties included)
    ("0/100", {"c": "0/101"}, {"c": "0/101"}),
    ("0/100", {"c": "1/0", "d": None}, {"c": "1/0"}),     # a peer with no progress applied nothing
    (None, {"c": "0/1", "d": None}, {"c": "0/1"}),        # a heir with none is behind any that has some
    ("A/0", {"c": "9/FFFFFFFF"}, {}),                      # compared as numbers, not as text
])
def test_ahead(heir: str | None, peers: dict[str, str | None], expected: dict[str, str]) -> None:
    assert ahead(heir, peers) == expected


@pytest.mark.parametrize(("heir", "peer", "what"), [
    # The cut-off scenario: the victim completed b and c after its link to the heir was cut.
    ({"r": run(a=("succeeded", 1), b=("queued", 0))}, {"r": run(a=("succeeded", 1), b=("succeeded", 1))},
     ["step b succeeded"]),
    ({"r": run(a=("running", 1))}, {"r": run("succeeded", a=("succeeded", 1))}, ["the run succeeded"]),
    ({"r": run(a=("succeeded", 1))}, {"r": run(a=("succeeded", 1), b=("queued", 0))},
     ["step b (released there, not here)"]),
    ({}, {"r": run(a=("queued", 0))}, ["the run, running (created there, not here)"]),
    # Finished there: nothing to adopt, but a re-sent submission would run it again in the heir.
    ({}, {"r": run("succeeded", a=("succeeded", 1))}, ["the run, succeeded (created there, not here)"]),
    # A failed attempt to be retried: the heir would start attempt 1 again.
    ({"r": run(a=("queued", 0))}, {"r": run(a=("queued", 1))}, ["step a attempt 1 ended"]),
    ({"r": run(a=("running", 1))}, {"r": run(a=("queued", 1))}, ["step a attempt 1 ended"]),
])
def test_work_the_heir_lacks(heir: dict[str, RunView], peer: dict[str, RunView], what: list[str]) -> None:
    assert [m.what for m in missing_work(A, heir, peer)] == what


@pytest.mark.parametrize(("heir", "peer"), [
    # Same work: the peer's extra WAL was heartbeats and lease rows.
    ({"r": run(a=("succeeded", 1), b=("queued", 0))}, {"r": run(a=("succeeded", 1), b=("queued", 0))}),
    # A claim the heir lacks: the step was running when the victim's lease ended (the lease window;
    # the heir re-queues it either way).
    ({"r": run(a=("queued", 0))}, {"r": run(a=("running", 1))}),
    # The heir is further for this run.
    ({"r": run(a=("succeeded", 1))}, {"r": run(a=("queued", 0))}),
    ({"r": run("succeeded", a=("succeeded", 1))}, {"r": run(a=("queued", 0))}),
    # The heir's copy gives the run to someone else already (an earlier adoption): not the victim's.
    ({"r": run(owner="us-east", a=("queued", 0))}, {"r": run(a=("succeeded", 1))}),
    # The peer's copy moved the run away from the victim.
    ({"r": run(a=("queued", 0))}, {"r": run(owner="ap-south", a=("succeeded", 1))}),
])
def test_nothing_that_matters_is_missing(heir: dict[str, RunView], peer: dict[str, RunView]) -> None:
    assert missing_work(A, heir, peer) == []


def test_map_elements_are_named_with_their_index() -> None:
    heir = {"r": RunView(A, "running", {"t1": TaskView("m", 3, "queued", 0)})}
    peer = {"r": RunView(A, "running", {"t1": TaskView("m", 3, "succeeded", 1)})}
    assert missing_work(A, heir, peer) == [Missing("r", "step m[3] succeeded")]


def test_refusal_names_the_furthest_holder_and_both_positions() -> None:
    holders = {"ap-south": ("0/5000", [Missing("r1", "step b succeeded")]),
               "eu-central": ("0/4000", [Missing("r1", "step b succeeded")])}
    text = refusal(A, "us-east", "0/3000", holders)
    assert text.startswith(f"us-east lacks work {A} committed: fail over to ap-south, which has applied "
                           f"{A}'s WAL up to 0/5000; us-east only up to 0/3000")
    assert "eu-central has applied" in text and "run r1: step b succeeded" in text
    assert f"'regionmesh failover {A} --to ap-south'" in text


def test_no_holder_no_refusal() -> None:
    assert refusal(A, "us-east", "0/1", {}) == ""


@given(st.lists(st.sampled_from(["queued", "running", "succeeded", "failed"]), min_size=1, max_size=6),
       st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_a_copy_never_lacks_its_own_work(statuses: list[str], attempts: list[int]) -> None:
    tasks = {f"t{i}": TaskView(f"s{i}", None, s, attempts[i] + (s == "running")) for i, s in enumerate(statuses)}
    view = {"r": RunView(A, "running", tasks)}
    assert missing_work(A, view, view) == []
