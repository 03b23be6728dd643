"""The example workflows the tests and the demo use.

``onboard``: validate -> hash -> create -> welcome (the seed's example).
``etl``: extract -> transform (mapped over the extracted items) -> load.
``goal``: a decomposer: the input's ``tasks`` become a fan-in DAG at run time.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from regionmesh.workers.definitions import RetryPolicy, Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.registry import default_registry as registry

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USER_NAMESPACE = uuid.UUID("0b6f1a5e-4d1c-4bb0-9a55-0d1e2f3a4b5c")


@registry.handler("onboard.validate")
def validate(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    email = str(data.get("email", ""))
    if not EMAIL_RE.match(email):
        raise ValueError(f"invalid email {email!r}")
    return {"email": email.lower(), "name": str(data.get("name") or email.split("@")[0])}


@registry.handler("onboard.hash")
def hash_(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(f"{ctx.tenant_id}:{data['email']}".encode()).hexdigest()
    return data | {"email_hash": digest}


@registry.handler("onboard.create")
def create(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    # Deterministic id: re-running this step creates the same user.
    user_id = uuid.uuid5(USER_NAMESPACE, f"{ctx.tenant_id}:{data['email_hash']}")
    return data | {"user_id": str(user_id)}


@registry.handler("onboard.welcome")
def welcome(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": data["user_id"], "message": f"Welcome, {data['name']}!", "dedupe_key": ctx.idempotency_key}


registry.register(
    Workflow(
        name="onboard",
        steps=(
            Step("validate", "onboard.validate", retry=RetryPolicy(max_attempts=1)),
            Step("hash", "onboard.hash", depends_on=("validate",)),
            Step("create", "onboard.create", depends_on=("hash",)),
            Step("welcome", "onboard.welcome", depends_on=("create",)),
        ),
    )
)


@registry.handler("etl.extract")
def extract(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    items = list(data["items"]) if "items" in data else list(range(int(data.get("n", 5))))
    return {"items": items}


@registry.handler("etl.transform")
def transform(ctx: StepContext, item: Any) -> Any:
    if isinstance(item, (int, float)):
        return item * item
    return str(item).upper()


@registry.handler("etl.load")
def load(ctx: StepContext, rows: list[Any]) -> dict[str, Any]:
    numeric = [r for r in rows if isinstance(r, (int, float))]
    return {"loaded": len(rows), "sum": sum(numeric), "rows": rows[:100]}


registry.register(
    Workflow(
        name="etl",
        steps=(
            Step("extract", "etl.extract"),
            Step("transform", "etl.transform", depends_on=("extract",), map_over="extract.items"),
            Step("load", "etl.load", depends_on=("transform",)),
        ),
    )
)


@registry.handler("goal.task")
def goal_task(ctx: StepContext, data: Any) -> dict[str, Any]:
    return {"done": ctx.step}


@registry.handler("goal.finish")
def goal_finish(ctx: StepContext, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"finished": sorted(data) if isinstance(data, Mapping) else [ctx.step]}


def decompose_goal(goal: str, data: Mapping[str, Any]) -> Iterable[Step]:
    """Each named task runs in parallel; ``finish`` gathers them."""
    names = [str(t) for t in data.get("tasks", [])]
    steps = [Step(name, "goal.task") for name in names]
    steps.append(Step("finish", "goal.finish", depends_on=tuple(names)))
    return steps


registry.register(Workflow(name="goal", decomposer=decompose_goal, goal="complete every listed task"))
