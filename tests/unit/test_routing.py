"""Rendezvous hashing and placement: deterministic, balanced, minimal movement. Pure."""

from __future__ import annotations

import hashlib
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from regionmesh.routing.hashing import home_by_hash, score
from regionmesh.routing.placement import RegionRow, RegistryEntry, place, placing_regions, version

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
    assert "registry: pin" in pinned.explain()
    unpinned = place("acme", THREE, RegistryEntry("acme", other, "hash", 5))
    assert (unpinned.region, unpinned.reason) == (hashed, "hash")
    # An override to a region this config does not know is ignored.
    assert place("acme", THREE, RegistryEntry("acme", "mars", "pin", 1)).region == hashed


def _rows(**status: tuple[str, str | None, int]) -> dict[str, RegionRow]:
    return {name.replace("_", "-"): RegionRow(*row) for name, row in status.items()}


def test_a_failed_over_region_hands_its_tenants_to_its_successor_and_keeps_their_intent() -> None:
    rows = _rows(eu_west=("failed_over", "us-east", 3))
    mine = [t for t in TENANTS[:3000] if home_by_hash(t, THREE) == "eu-west"]
    assert mine
    for t in mine:
        p = place(t, THREE, None, rows)
        assert (p.region, p.intent, p.reason) == ("us-east", "eu-west", "hash")
        assert p.epoch == 3  # the failover's region epoch: runs created now beat the failed region's
    for t in TENANTS[:3000]:
        if t not in set(mine):
            assert place(t, THREE, None, rows).region == home_by_hash(t, THREE)  # nobody else moves


def test_a_pin_survives_failover_and_restore_and_epochs_only_grow() -> None:
    entry = RegistryEntry("acme", "eu-west", "pin", 4)
    before = place("acme", THREE, entry, _rows(eu_west=("active", None, 1)))
    during = place("acme", THREE, entry, _rows(eu_west=("failed_over", "ap-south", 2)))
    after = place("acme", THREE, entry, _rows(eu_west=("active", None, 3)))
    assert (before.region, during.region, after.region) == ("eu-west", "ap-south", "eu-west")
    assert during.intent == after.intent == "eu-west" and during.reason == "pin"
    assert during.epoch > before.epoch


def test_successor_chains_are_followed_and_loops_stop() -> None:
    t = next(t for t in TENANTS if home_by_hash(t, THREE) == "eu-west")
    chain = _rows(eu_west=("failed_over", "us-east", 2), us_east=("draining", "ap-south", 5))
    assert place(t, THREE, None, chain).region == "ap-south"
    loop = _rows(eu_west=("failed_over", "us-east", 2), us_east=("failed_over", "eu-west", 2))
    assert place(t, THREE, None, loop).region in THREE  # no endless walk


def test_failing_over_keeps_tenants_where_they_are_until_the_lease_expired() -> None:
    t = next(t for t in TENANTS if home_by_hash(t, THREE) == "eu-west")
    assert place(t, THREE, None, _rows(eu_west=("failing_over", "us-east", 2))).region == "eu-west"
    assert placing_regions(THREE, _rows(eu_west=("failing_over", "us-east", 2))) == THREE
    assert placing_regions(THREE, _rows(eu_west=("failed_over", "us-east", 2))) == ["us-east", "ap-south"]


def test_version_spells_what_rm_placement_version_returns() -> None:
    rows = _rows(us_east=("active", None, 1), eu_west=("failed_over", "us-east", 3))
    assert version(RegistryEntry("acme", "eu-west", "pin", 7), rows) == "7/eu-west=failed_over@3,us-east=active@1/0/0"
    assert version(None, {}) == "0//0/0"
