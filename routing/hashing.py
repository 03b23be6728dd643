"""Rendezvous (highest-random-weight) hashing of tenants over regions. Pure.

The language-neutral definition, so producers anywhere compute the same home:

    score(tenant, region) = first 8 bytes of SHA-256(UTF-8(tenant + ":" + region)),
                            read as an unsigned big-endian integer
    home(tenant, regions) = the region with the highest score (ties: the greater name)

Adding a region moves to it only the tenants it now wins (about 1/N);
removing a region moves only its own tenants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def score(tenant_id: str, region: str) -> int:
    digest = hashlib.sha256(f"{tenant_id}:{region}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def home_by_hash(tenant_id: str, regions: Iterable[str]) -> str:
    """The tenant's home among ``regions``. Raises ValueError if there are none."""
    best: tuple[int, str] | None = None
    for region in regions:
        candidate = (score(tenant_id, region), region)
        if best is None or candidate > best:
            best = candidate
    if best is None:
        raise ValueError("no active region to place the tenant in")
    return best[1]
