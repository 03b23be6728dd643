"""A handler that swallows its step's timeout and overruns it (issue 21, item 5), for the
acceptance test of the step limit (``tests/acceptance/test_step_overrun.py``). Workers load it by
module path beside ``regionmesh.testing.workflows``, whose ledger it writes: a ``start`` line, a
``tick`` line every half second while it runs, and an ``effect`` line if it ever finishes."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from regionmesh.testing.workflows import ledger_write
from regionmesh.workers.definitions import RetryPolicy, Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.registry import default_registry as registry

TICK_S = 0.5


@registry.handler("t.swallow")
def swallow(ctx: StepContext, payload: Any) -> dict[str, Any]:
    """Runs ``seconds`` (default 25) in slices, each inside ``try/except Exception``: StepTimeout
    included, whatever it catches it ignores. With ``overrun_attempts`` (a list), only those
    attempts overrun; the others return at once."""
    seconds = float(payload.get("seconds", 25)) if isinstance(payload, Mapping) else 25.0
    only = payload.get("overrun_attempts") if isinstance(payload, Mapping) else None
    if isinstance(only, list) and ctx.attempt not in only:
        seconds = 0.0
    ledger_write(ctx, "start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            threading.Event().wait(TICK_S)  # not time.sleep: libfaketime breaks clock_nanosleep
            ledger_write(ctx, "tick")
        except Exception:  # noqa: S110 - the point: a handler that swallows everything
            pass
    ledger_write(ctx, "effect")
    return {"slept": seconds}


@registry.handler("t.mark")
def mark(ctx: StepContext, payload: Any) -> Any:
    """A quick step: ``start`` and ``effect`` lines, and its input passed on to the next step."""
    ledger_write(ctx, "start")
    ledger_write(ctx, "effect")
    return payload


# A 2 s timeout, three tries with short backoff; and one try only.
registry.register(Workflow("t_swallow", steps=(
    Step("only", "t.swallow", timeout_s=2.0, retry=RetryPolicy(max_attempts=3, base_s=0.1, max_s=0.2)),)))
registry.register(Workflow("t_swallow_once", steps=(
    Step("only", "t.swallow", timeout_s=2.0, retry=RetryPolicy(max_attempts=1)),)))
# A chain run inline by one message (a -> b -> c): b swallows its 2 s timeout and overruns on the
# attempts its input names; it has two tries.
registry.register(Workflow("t_swallow_chain", steps=(
    Step("a", "t.mark"),
    Step("b", "t.swallow", depends_on=("a",), timeout_s=2.0, retry=RetryPolicy(max_attempts=2, base_s=0.1, max_s=0.2)),
    Step("c", "t.mark", depends_on=("b",)))))
