"""Reading the external effect ledger (regionmesh/testing/workflows.py ``t.ledger``): the checker shares
no code with the system under test."""

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
