"""What must take effect, computed from the workflow definitions and the inputs the producers sent,
never from the product's tables.

The checker keeps its own copy of the shapes of the ledger workflows (``t_ledger`` and
``t_ledger_map`` in the test workflows the campaign loads); a change there must be made here too,
and ``tests/unit/test_campaign_checker_rules.py`` compares the two:

* ``t_ledger`` and ``t_ledger_overrun`` (the same shape, short timeouts: the campaign's
  ``swallow_overrun`` fault): a; b and c after a; d after b and c — four tasks, index None;
* ``t_ledger_map``: a; m over ``a.items`` (``input["items"]``, default 3: m/0 … m/n-1, after a);
  d after every m task (after a when n = 0).

A run's id is derived from (tenant, key) as the design documents it (UUIDv5 of
``tenant + "\\x1f" + key`` in the run namespace), so expectations attach to runs without asking the
product which run a key became.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_NAMESPACE = uuid.UUID("6f1c9a52-6a43-4c55-9d0e-3b1f0a6ce1a1")

Task = tuple[str, int | None]  # (step, index)


@dataclass(frozen=True)
class Plan:
    """The tasks of one run and, for each, the tasks whose effects must come before it starts."""

    workflow: str
    after: Mapping[Task, frozenset[Task]]

    @property
    def tasks(self) -> frozenset[Task]:
        return frozenset(self.after)


def run_id(tenant: str, key: str) -> str:
    return str(uuid.uuid5(RUN_NAMESPACE, f"{tenant}\x1f{key}"))


def plan(workflow: str, data: Mapping[str, Any] | None) -> Plan | None:
    """The tasks ``workflow`` must run for input ``data``; None for a workflow the checker does not
    model (it then checks that run's effects for duplicates and overlaps only)."""
    a: Task = ("a", None)
    if workflow in ("t_ledger", "t_ledger_overrun"):
        b, c, d = ("b", None), ("c", None), ("d", None)
        return Plan(workflow, {a: frozenset(), b: frozenset({a}), c: frozenset({a}), d: frozenset({b, c})})
    if workflow == "t_ledger_map":
        n = int((data or {}).get("items", 3))
        maps = [("m", i) for i in range(n)]
        after: dict[Task, frozenset[Task]] = {a: frozenset()}
        after.update({m: frozenset({a}) for m in maps})
        after[("d", None)] = frozenset(maps) if maps else frozenset({a})
        return Plan(workflow, after)
    return None
