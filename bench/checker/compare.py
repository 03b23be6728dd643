"""The checker's own cross-region comparison of the rows it cares about (the product's ``verify``
is a second opinion, not the oracle). ``gather`` reads the rows with plain SQL; this compares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_REPORTED = 20  # differing rows reported per table (the count is always complete)


def compare(rows: Mapping[str, Mapping[str, Mapping[Any, Any]]], regions: list[str]) -> list[str]:
    """``rows``: table -> region -> {key: value}. One line per key whose value differs between
    regions or that some region lacks, at most ``MAX_REPORTED`` per table, then a count."""
    out: list[str] = []
    for table, per_region in sorted(rows.items()):
        keys = set().union(*(set(r) for r in per_region.values())) if per_region else set()
        bad = []
        for key in sorted(keys, key=str):
            seen = {region: per_region.get(region, {}).get(key, "<absent>") for region in regions}
            if len({repr(x) for x in seen.values()}) > 1:
                bad.append(f"{table} {key}: " + ", ".join(f"{r}={x}" for r, x in seen.items()))
        out += bad[:MAX_REPORTED]
        if len(bad) > MAX_REPORTED:
            out.append(f"{table}: {len(bad) - MAX_REPORTED} more rows differ")
    return out
