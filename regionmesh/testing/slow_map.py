"""A map step whose tasks take as long as their items say, for the erasure race test
(``tests/acceptance/test_erasure_race.py``): ``a`` hands the run input's ``items`` (objects with
``seconds``) to ``m``, one task per item, and ``d`` runs when every one of them completed. Workers
load it by module path beside ``regionmesh.testing.workflows``."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from regionmesh.workers.definitions import Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.registry import default_registry as registry


@registry.handler("t.items")
def items(ctx: StepContext, payload: Any) -> dict[str, Any]:
    return {"items": list(payload.get("items", [])) if isinstance(payload, Mapping) else []}


@registry.handler("t.item")
def item(ctx: StepContext, payload: Any) -> dict[str, Any]:
    seconds = float(payload.get("seconds", 0)) if isinstance(payload, Mapping) else 0.0
    threading.Event().wait(seconds)  # not time.sleep: libfaketime breaks clock_nanosleep
    return {"item": payload}


registry.register(Workflow("t_slow_map", steps=(
    Step("a", "t.items", timeout_s=60),
    Step("m", "t.item", depends_on=("a",), map_over="a.items", timeout_s=60),
    Step("d", "t.item", depends_on=("m",), timeout_s=60),
)))
