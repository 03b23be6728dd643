"""Workflow definitions: steps, retry policies, the registry and DAG validation.

Pure: no I/O. A workflow is either a static DAG (a tuple of steps) or a
decomposer that turns ``(goal, input)`` into steps; both are validated the
same way before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from regionmesh.errors import InvalidWorkflow, UnknownWorkflow

STEP_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")  # fullmatch: `$` would accept a trailing newline
MAX_STEPS = 1000
# Below the broker's visibility timeout (3600 s) with room for a retry countdown: a message
# held longer than that would be delivered a second time while the first copy runs.
MAX_STEP_TIMEOUT_S = 3000.0


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries in all; the delay before try n+1 is
    ``min(max_s, base_s * 2**(n-1))`` scaled by a jitter factor in [0.5, 1]."""

    max_attempts: int = 3
    base_s: float = 0.5
    max_s: float = 30.0


@dataclass(frozen=True)
class Step:
    """One node of a DAG.

    ``map_over`` names a dependency whose output is a list (or ``"dep.field"``
    for a list inside its output): the step runs once per element and its
    output is the list of results, in order.
    """

    key: str
    handler: str
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 300.0
    map_over: str | None = None

    @property
    def map_source(self) -> tuple[str, str | None] | None:
        if self.map_over is None:
            return None
        dep, _, path = self.map_over.partition(".")
        return dep, (path or None)


Decomposer = Callable[[str, Mapping[str, Any]], Iterable[Step]]
Handler = Callable[..., Any]


class Park(Exception):
    """Raised by a waiting step's handler (workers/waits.py): put this task back to wait, holding
    no worker and no message, until ``wake_at`` or the database's clock + ``wait_s`` (the first
    park sets the wake time; later ones keep it)."""

    def __init__(self, *, wake_at: Any = None, wait_s: float | None = None) -> None:
        super().__init__("parked")
        self.wake_at = wake_at
        self.wait_s = wait_s


class Handlers(dict[str, Handler]):
    """Handlers by name. A name ``family:argument`` with no handler of its own resolves through the
    factory registered for ``family`` (the waiting steps: ``regionmesh.sleep:30``)."""

    def __init__(self) -> None:
        super().__init__()
        self.families: dict[str, Callable[[str], Handler | None]] = {}

    def get(self, name: str, default: Any = None) -> Any:
        found = super().get(name)
        if found is not None:
            return found
        family, sep, argument = name.partition(":") if isinstance(name, str) else ("", "", "")
        factory = self.families.get(family) if sep else None
        made = factory(argument) if factory is not None else None
        return made if made is not None else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


@dataclass(frozen=True)
class Workflow:
    """A named workflow: static ``steps`` or a ``decomposer`` of its goal and input."""

    name: str
    steps: tuple[Step, ...] = ()
    decomposer: Decomposer | None = None
    goal: str | None = None

    def decompose(self, payload: Mapping[str, Any], handlers: Mapping[str, Handler]) -> tuple[Step, ...]:
        """The validated steps for one run. Raises InvalidWorkflow."""
        if self.decomposer is None:
            steps = self.steps
        else:
            try:
                steps = tuple(self.decomposer(self.goal or self.name, payload))
            except InvalidWorkflow:
                raise
            except Exception as exc:  # a decomposer bug is the workflow's error
                raise InvalidWorkflow(self.name, f"decomposer raised {type(exc).__name__}: {exc}") from exc
        validate(self.name, steps, handlers)
        return steps


def validate(workflow: str, steps: tuple[Step, ...], handlers: Mapping[str, Handler]) -> None:
    """Check a DAG: names, duplicates, unknown dependencies and handlers, map sources, cycles.

    Raises InvalidWorkflow with the first problem found.
    """
    if not steps:
        raise InvalidWorkflow(workflow, "it has no steps")
    if len(steps) > MAX_STEPS:
        raise InvalidWorkflow(workflow, f"{len(steps)} steps exceed the limit of {MAX_STEPS}")
    seen: set[str] = set()
    for step in steps:
        if not isinstance(step, Step):
            raise InvalidWorkflow(workflow, f"{step!r} is not a Step")
        if not isinstance(step.key, str) or not STEP_KEY_RE.fullmatch(step.key):
            raise InvalidWorkflow(workflow, f"step key {step.key!r} is invalid (letters, digits, '_', '-'; max 64)")
        if step.key in seen:
            raise InvalidWorkflow(workflow, f"duplicate step name {step.key!r}")
        seen.add(step.key)
    for step in steps:
        if step.handler not in handlers:
            raise InvalidWorkflow(workflow, f"step {step.key!r} names unknown handler {step.handler!r}")
        if len(set(step.depends_on)) != len(step.depends_on):
            raise InvalidWorkflow(workflow, f"step {step.key!r} lists a dependency twice")
        for dep in step.depends_on:
            if dep not in seen:
                raise InvalidWorkflow(workflow, f"step {step.key!r} depends on unknown step {dep!r}")
        source = step.map_source
        if source is not None and source[0] not in step.depends_on:
            raise InvalidWorkflow(workflow, f"step {step.key!r} maps over {source[0]!r}, which is not a dependency")
        if step.retry.max_attempts < 1 or step.retry.base_s < 0 or step.retry.max_s < step.retry.base_s:
            raise InvalidWorkflow(workflow, f"step {step.key!r} has an invalid retry policy {step.retry}")
        if step.timeout_s <= 0:
            raise InvalidWorkflow(workflow, f"step {step.key!r} has a non-positive timeout")
        if step.timeout_s > MAX_STEP_TIMEOUT_S:
            raise InvalidWorkflow(workflow, f"step {step.key!r} timeout {step.timeout_s:g}s exceeds {MAX_STEP_TIMEOUT_S:g}s "
                                  "(it must stay below the broker visibility timeout); split the step")
    cycle = find_cycle(steps)
    if cycle:
        raise InvalidWorkflow(workflow, f"cycle: {' -> '.join(cycle)}")


def find_cycle(steps: tuple[Step, ...]) -> list[str] | None:
    """A dependency cycle as a list of keys (first repeated at the end), or None."""
    deps = {s.key: s.depends_on for s in steps}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(key: str) -> list[str] | None:
        state[key] = 1
        stack.append(key)
        for dep in deps.get(key, ()):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[key] = 2
        return None

    for key in deps:
        if key not in state:
            found = visit(key)
            if found:
                return found
    return None


class Registry:
    """Workflows and handlers by name. One per worker app; filled at start-up."""

    def __init__(self) -> None:
        self.workflows: dict[str, Workflow] = {}
        self.handlers = Handlers()

    def handler(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator registering a step handler ``fn(ctx, payload) -> JSON``."""

        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    def register(self, workflow: Workflow) -> Workflow:
        """Add a workflow; a static DAG is validated now. Raises InvalidWorkflow."""
        if workflow.decomposer is None:
            validate(workflow.name, workflow.steps, self.handlers)
        elif workflow.steps:
            raise InvalidWorkflow(workflow.name, "give either steps or a decomposer, not both")
        self.workflows[workflow.name] = workflow
        return workflow

    def get(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            raise UnknownWorkflow(name, sorted(self.workflows)) from None
