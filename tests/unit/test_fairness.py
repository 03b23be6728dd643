"""The fair dispatcher's choice (workers/fairness.py): bands, aging, pass, limits; pure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regionmesh.errors import RejectedSubmission
from regionmesh.workers.fairness import HIGH, LOW, NORMAL, Candidate, band_of, choose, effective_band, parse_rate


def cand(tenant: str, pass_: float = 0.0, band: int = NORMAL, waited_s: float = 0.0, **kw: object) -> Candidate:
    return Candidate(tenant_id=tenant, pass_=pass_, band=band, waited_s=waited_s, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "band"), [(None, NORMAL), (0, LOW), (2, HIGH), ("low", LOW), ("HIGH", HIGH)])
def test_band_of_accepts_numbers_and_names(value: object, band: int) -> None:
    assert band_of(value) == band


@pytest.mark.parametrize("value", [3, -1, True, "urgent", 1.5, [1]])
def test_band_of_refuses_anything_else_with_a_reason(value: object) -> None:
    with pytest.raises(RejectedSubmission, match="priority must be 0, 1 or 2"):
        band_of(value)


@pytest.mark.parametrize(("text", "per_s"), [("50/s", 50.0), ("600/min", 10.0), ("0.5 / s", 0.5), ("3/second", 3.0)])
def test_parse_rate(text: str, per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["50", "0/s", "-1/s", "5/h", "fast"])
def test_parse_rate_refuses_with_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="like 50/s or 600/min"):
        parse_rate(text)


@pytest.mark.parametrize(("band", "waited", "aging", "expected"), [
    (LOW, 0.0, 10.0, LOW), (LOW, 9.9, 10.0, LOW), (LOW, 10.0, 10.0, NORMAL), (LOW, 20.0, 10.0, HIGH),
    (LOW, 1e6, 10.0, HIGH), (NORMAL, 10.0, 10.0, HIGH), (HIGH, 0.0, 10.0, HIGH),
])
def test_effective_band_ages_one_band_per_period_up_to_the_top(band: int, waited: float, aging: float,
                                                             expected: int) -> None:
    assert effective_band(band, waited, aging) == expected


def test_band_before_pass_then_pass_then_oldest() -> None:
    order = choose([cand("a", pass_=0.0, band=LOW), cand("b", pass_=9.0, band=HIGH), cand("c", pass_=1.0),
                    cand("d", pass_=1.0, waited_s=5.0)]).order
    assert order == ("b", "d", "c", "a")


def test_a_low_band_that_waited_two_aging_periods_competes_at_the_top() -> None:
    # The aging bound: after 2 * aging_s a low head is ordered with the high ones, by pass.
    order = choose([cand("bulk", pass_=0.0, band=LOW, waited_s=20.0), cand("urgent", pass_=5.0, band=HIGH)],
                   aging_s=10.0).order
    assert order == ("bulk", "urgent")


def test_held_back_tenants_are_skipped_and_reported() -> None:
    got = choose([cand("capped", capped=True), cand("rated", rate_wait_s=0.3), cand("free", pass_=100.0)])
    assert got.order == ("free",) and not got.contended
    held = choose([cand("capped", capped=True), cand("rated", rate_wait_s=0.3)])
    assert held.order == () and held.blocked == "concurrency" and held.wait_s == pytest.approx(0.05)
    assert choose([cand("rated", rate_wait_s=0.3)]).wait_s == pytest.approx(0.3)
    assert choose([]) .blocked is None


def simulate(weights: dict[str, float], costs: dict[str, float], seconds: float) -> dict[str, float]:
    """Stride over worker-seconds as the region runs it: take the smallest pass, charge cost/weight,
    until ``seconds`` of worker time were given."""
    passes = dict.fromkeys(weights, 0.0)
    used = dict.fromkeys(weights, 0.0)
    while sum(used.values()) < seconds:
        tenant = choose([cand(t, pass_=p) for t, p in passes.items()]).order[0]
        passes[tenant] += costs[tenant] / weights[tenant]
        used[tenant] += costs[tenant]
    return used


@settings(deadline=None, max_examples=40)
@given(w=st.integers(1, 5), cost_a=st.sampled_from([0.005, 0.01, 0.05]), cost_b=st.sampled_from([0.005, 0.01, 0.05]))
def test_worker_time_shares_follow_the_weights_whatever_the_step_costs(w: int, cost_a: float, cost_b: float) -> None:
    used = simulate({"a": float(w), "b": 1.0}, {"a": cost_a, "b": cost_b}, 300 * max(cost_a, cost_b))
    share = used["a"] / (used["a"] + used["b"])
    assert share == pytest.approx(w / (w + 1), abs=0.03)
