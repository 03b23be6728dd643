"""Which messages the broker adapter counts as step messages (rm.step_messages). Pure."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from regionmesh.broker import step_task_id
from regionmesh.names import RUN_STEP_TASK, SUBMIT_TASK


def message(task: str, kwargs: Any, *, encoding: str = "base64") -> dict[str, Any]:
    body = json.dumps([[], kwargs, {}])
    if encoding == "base64":
        body = base64.b64encode(body.encode()).decode()
    return {"body": body, "headers": {"task": task, "id": "c-1"},
            "properties": {"body_encoding": encoding, "delivery_tag": "d-1"}}


def test_a_run_step_message_is_counted_by_its_task_id() -> None:
    assert step_task_id(message(RUN_STEP_TASK, {"task_id": "t-1"})) == "t-1"
    assert step_task_id(message(RUN_STEP_TASK, {"task_id": "t-2"}, encoding="utf-8")) == "t-2"


@pytest.mark.parametrize("msg", [
    message(SUBMIT_TASK, {"task_id": "t-1"}),  # another task, even with such a kwarg
    message(RUN_STEP_TASK, {"task_id": 7}),
    message(RUN_STEP_TASK, {}),
    message(RUN_STEP_TASK, ["not", "kwargs"]),
    {"body": "%%%", "headers": {"task": RUN_STEP_TASK}, "properties": {"body_encoding": "base64"}},
    {"headers": None},
    {},
])
def test_anything_else_is_not(msg: dict[str, Any]) -> None:
    assert step_task_id(msg) is None
