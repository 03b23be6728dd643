"""Rendezvous hashing and placement: deterministic, balanced, minimal movement. Pure."""

from __future__ import annotations

import hashlib
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from regionmesh.routing.hashing import home_by_hash, score
from regionmesh.routing.placement import RegistryEntry, active_regions, place

THREE = ["us-east", "eu-west", "ap-south"]
TENANTS = [f"tenant-{i}" for i in range(100_000)]


def test_score_is_the_documented_function() -> None:
    expected = int.from_bytes(hashlib.sha256(b"acme:us-east").digest()[:8], "big")
    assert score("acme", "us-east") == expected
    # A pinned value, so another language's implementation can check itself against it.
    assert home_by_hash("acme", THREE) == max(THREE, key=lambda r: score("acme", r))


@given(st.text(min_size=1, max_size=64), st.permutations(THREE))
def test_deterministic_and_order_independent(tenant: str, order: list[str]) -> None:
    assert home_by_hash(tenant, order) == home_by_hash(tenant, THREE)


def test_balanced_within_ten_percent_over_100k_tenants() -> None:
    counts = Counter(home_by_hash(t, THREE) for t in TENANTS)
    fair = len(TENANTS) / 3
    assert all(abs(n - fair) / fair <= 0.10 for n in counts.values()), counts


def test_adding_a_fourth_region_moves_about_a_quarter_and_only_to_it() -> None:
    four = [*THREE, "sa-east"]
    moved = [(home_by_hash(t, THREE), home_by_hash(t, four)) for t in TENANTS]
    changed = [(a, b) for a, b in moved if a != b]
    assert all(b == "sa-east" for _, b in changed)
    assert abs(len(changed) / len(TENANTS) - 0.25) < 0.02, len(changed)


def test_removing_a_region_moves_only_its_own_tenants() -> None:
    two = ["us-east", "ap-south"]
    for t in TENANTS[:20_000]:
        before, after = home_by_hash(t, THREE), home_by_hash(t, two)
        assert before == after or before == "eu-west"


def test_registry_override_wins_and_unpin_falls_back_to_hash() -> None:
    hashed = home_by_hash("acme", THREE)
    other = next(r for r in THREE if r != hashed)
    pinned = place("acme", THREE, RegistryEntry("acme", other, "pin", 4))
    assert (pinned.region, pinned.reason, pinned.epoch) == (other, "pin", 4)
    assert "registry: pin at epoch 4" in pinned.explain()
    unpinned = place("acme", THREE, RegistryEntry("acme", other, "hash", 5))
    assert (unpinned.region, unpinned.reason) == (hashed, "hash")
    # An override to a region this config does not know is ignored.
    assert place("acme", THREE, RegistryEntry("acme", "mars", "pin", 1)).region == hashed


def test_failed_over_regions_are_not_active_for_hashing() -> None:
    active = active_regions(THREE, {"eu-west": "failed_over"})
    assert active == ["us-east", "ap-south"]
    for t in TENANTS[:2000]:
        assert place(t, active, None, THREE).region != "eu-west"
