"""Reading the external effect ledger (regionmesh/testing/workflows.py ``t.ledger``): the checker shares
no code with the system under test.

One JSON line per phase of an execution, ``start`` before the handler's wait and ``effect`` after it,
appended to ``ledger-<region>.jsonl``:

``run``, ``step``, ``idx`` (None outside a map step), ``key`` (the idempotency key), ``region``,
``attempt``, ``epoch`` (the run's owner epoch at the claim), ``lease_until`` (the lease end the
worker read just after its claim, seconds since 1970 on the database's clock; None: it held none),
``token`` (the fencing token), ``host``, ``pid`` (the pool process), ``worker`` (the Celery worker's
name), ``phase``, ``t`` (wall clock, seconds since 1970) and ``mono`` (the host's monotonic clock).
Lines written before issue 20 carry only the first seven and ``t``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def read(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("ledger-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def effects(folder: Path) -> dict[tuple[str, str, int | None], list[dict[str, Any]]]:
    """(run, step, index) -> every completed effect of it, in ledger order."""
    by: dict[tuple[str, str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for e in read(folder):
        if e["phase"] == "effect":
            by[(e["run"], e["step"], e["idx"])].append(e)
    return dict(by)
