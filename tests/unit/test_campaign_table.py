"""The ten-seed table reads each campaign's verdict in the checker's own classes."""

from __future__ import annotations

from bench.campaign_table import row
from bench.checker.verdict import Verdict


def test_a_row_counts_each_class_the_checker_reported() -> None:
    v = Verdict(submissions={"direct": 3, "raw": 2}, faults={"pool_kill": 2}, runs=5, step_effects=20, identical=True,
                crash_reruns={"process killed (pool_kill)": 1}, lost_first={"broker restart": 1})
    v.add("lost_first_publish", "x")
    v.add("stale_completion", "y")
    v.add("residency", "z")
    v.add("residency", "z2")
    v.add("apply_error", "w")
    r = row({"seed": 3, "minutes": 5, "verdict": v.as_json(), "drained": True})
    assert (r["acked"], r["faults"], r["lost"], r["lost_first"], r["stale"], r["residency"], r["reruns"]) == (
        5, 2, 0, 1, 1, 2, 1)
    assert r["other_violations"] == ["apply_error"] and r["identical"] is True
