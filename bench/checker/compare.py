"""The checker's own cross-region comparison of the rows it cares about (the product's ``verify``
is a second opinion, not the oracle). ``gather`` reads the rows with plain SQL; this compares.

A row's value starts with its tenant. A zoned tenant's rows are compared among its zone's regions
only, and a region outside the zone that holds one is a residency finding, not a divergence."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_REPORTED = 20  # differing rows reported per table (the count is always complete)


def _all(_tenant: str) -> None:
    return None


def compare(rows: Mapping[str, Mapping[str, Mapping[Any, Any]]], regions: list[str],
            holders: Callable[[str], list[str] | None] = _all) -> tuple[list[str], list[str]]:
    """``rows``: table -> region -> {key: (tenant, …)}; ``holders(tenant)``: the regions that must
    hold the tenant's rows (None: all). Returns (divergences, residency findings): one line per key
    whose value differs between the regions that must hold it or that one of them lacks, and one
    per key held where it must not be, at most ``MAX_REPORTED`` of each per table, then a count."""
    differ: list[str] = []
    outside: list[str] = []
    for table, per_region in sorted(rows.items()):
        keys = set().union(*(set(r) for r in per_region.values())) if per_region else set()
        bad, leaked = [], []
        for key in sorted(keys, key=str):
            tenant = next(str(rows_[key][0]) for rows_ in per_region.values() if key in rows_)
            must = holders(tenant)
            among = regions if must is None else [r for r in regions if r in must]
            if must is not None:
                extra = [r for r in regions if r not in must and key in per_region.get(r, {})]
                if extra:
                    leaked.append(f"{table} {key} of zoned tenant {tenant} held outside its zone in {', '.join(extra)}")
            seen = {region: per_region.get(region, {}).get(key, "<absent>") for region in among}
            if len({repr(x) for x in seen.values()}) > 1:
                bad.append(f"{table} {key}: " + ", ".join(f"{r}={x}" for r, x in seen.items()))
        for found, out in ((bad, differ), (leaked, outside)):
            out += found[:MAX_REPORTED]
            if len(found) > MAX_REPORTED:
                out.append(f"{table}: {len(found) - MAX_REPORTED} more rows")
    return differ, outside
