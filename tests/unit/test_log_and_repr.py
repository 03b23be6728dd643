"""Structured log lines and what Flower shows of a submission."""

from __future__ import annotations

import json
import logging

import pytest

from regionmesh.log import event
from regionmesh.workers.submission import kwargs_summary


def test_log_line_carries_region_tenant_run_step_first(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="regionmesh"):
        event(logging.INFO, "step.succeeded", attempt=2, step="load", run="r-1", extra="x y", tenant="acme", region="us-east")
    assert caplog.messages == ['step.succeeded region=us-east tenant=acme run=r-1 step=load attempt=2 extra="x y"']


def test_flower_sees_who_and_what_but_not_the_input() -> None:
    shown = kwargs_summary({"tenant_id": "acme", "workflow": "onboard", "input": {"password": "hunter2"},
                            "submission_id": "s-1", "idempotency_key": None})
    assert "acme" in shown and "onboard" in shown and "s-1" in shown
    assert "hunter2" not in shown and "bytes>" in shown


@pytest.mark.parametrize("value", ["t3\nrun.created region=us-east tenant=victim", 'a"b', "k=v", "", "x\ty", "\u2028"])
def test_a_value_cannot_forge_a_field_or_a_line(caplog: pytest.LogCaptureFixture, value: str) -> None:
    with caplog.at_level(logging.INFO, logger="regionmesh"):
        event(logging.INFO, "message.rejected", region="us-east", tenant=value)
    (line,) = caplog.messages
    assert "\n" not in line and "\u2028" not in line
    assert line.count("=") == 2 or line.endswith(json.dumps(value))
    assert line == f"message.rejected region=us-east tenant={json.dumps(value)}"
