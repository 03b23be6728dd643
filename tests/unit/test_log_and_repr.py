"""Structured log lines and what Flower shows of a submission."""

from __future__ import annotations

import logging

import pytest
from regionmesh.workers.log import event

from regionmesh.client import kwargs_summary


def test_log_line_carries_region_tenant_run_step_first(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="regionmesh"):
        event(logging.INFO, "step.succeeded", attempt=2, step="load", run="r-1", extra="x y", tenant="acme", region="us-east")
    assert caplog.messages == ['step.succeeded region=us-east tenant=acme run=r-1 step=load attempt=2 extra="x y"']


def test_flower_sees_who_and_what_but_not_the_input() -> None:
    shown = kwargs_summary({"tenant_id": "acme", "workflow": "onboard", "input": {"password": "hunter2"},
                            "submission_id": "s-1", "idempotency_key": None})
    assert "acme" in shown and "onboard" in shown and "s-1" in shown
    assert "hunter2" not in shown and "bytes>" in shown
