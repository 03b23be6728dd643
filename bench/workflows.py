"""Benchmark workflows: a 1-step run and a 10-step chain of no-op steps."""

from __future__ import annotations

from typing import Any

from regionmesh.workers.definitions import Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.registry import default_registry as registry


@registry.handler("bench.noop")
def noop(ctx: StepContext, payload: Any) -> int:
    return 0


registry.register(Workflow("bench_1", steps=(Step("s0", "bench.noop"),)))
registry.register(
    Workflow("bench_10", steps=tuple(Step(f"s{i}", "bench.noop", depends_on=(f"s{i-1}",) if i else ()) for i in range(10)))
)
