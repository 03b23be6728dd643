"""Zones in placement: a zoned tenant is placed only inside its zone, held when none of it places
runs, and operations that would take it out are refused. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionmesh.config import parse_config
from regionmesh.errors import ConfigError
from regionmesh.routing.hashing import home_by_hash
from regionmesh.routing.placement import RegionRow, RegistryEntry, place, version
from regionmesh.routing.zones import ZoneBinding, refusal, zone_fallback

pytestmark = pytest.mark.unit

FOUR = ["eu-west", "eu-central", "us-east", "ap-south"]
EU = ZoneBinding("eu", ("eu-west", "eu-central"), 1)
ZONES = {"eu": ("eu-west", "eu-central")}


def failed(to: str, epoch: int = 2) -> RegionRow:
    return RegionRow("failed_over", to, epoch)


@given(st.text(min_size=1, max_size=40))
def test_a_zoned_tenant_is_hashed_over_its_zone_only(tenant: str) -> None:
    p = place(tenant, FOUR, None, {}, EU)
    assert p.region == home_by_hash(tenant, ["eu-west", "eu-central"]) and p.zone == "eu" and not p.held


@given(st.text(min_size=1, max_size=40), st.sampled_from(FOUR), st.sampled_from(FOUR), st.sampled_from(FOUR))
def test_following_successors_never_leaves_the_zone(tenant: str, a: str, b: str, c: str) -> None:
    rows = {a: failed(b), b: failed(c)} if a != b else {a: failed(c)}
    p = place(tenant, FOUR, None, rows, EU)
    assert p.held or p.region in EU.regions


@pytest.mark.parametrize(("pin", "rows", "region", "held"), [
    ("eu-west", {}, "eu-west", False),
    ("us-east", {}, None, False),  # a stale pin outside the zone is ignored: the zone's hash decides
    ("eu-west", {"eu-west": failed("eu-central")}, "eu-central", False),
    ("eu-west", {"eu-west": failed("us-east")}, "eu-central", False),  # successor outside: the zone's next
    ("eu-west", {"eu-west": failed("us-east"), "eu-central": RegionRow("failing_over", None, 2)}, None, True),
    ("eu-west", {"eu-west": failed("us-east"), "eu-central": failed("ap-south")}, None, True),
    ("eu-central", {"eu-central": RegionRow("draining", "ap-south", 3)}, "eu-west", False),
])
def test_pins_and_successors_inside_a_zone(pin: str, rows: dict[str, RegionRow], region: str | None,
                                           held: bool) -> None:
    p = place("acme", FOUR, RegistryEntry("acme", pin, "pin", 4), rows, EU)
    assert p.held is held
    if region is not None:
        assert p.region == region
    elif not held:
        assert p.region == home_by_hash("acme", ["eu-west", "eu-central"])


def test_unzoned_tenants_follow_successors_anywhere() -> None:
    p = place("acme", FOUR, RegistryEntry("acme", "eu-west", "pin", 1), {"eu-west": failed("us-east")})
    assert p.region == "us-east" and p.zone is None and not p.held


def test_the_version_covers_the_binding_and_the_erasure() -> None:
    rows = {"eu-west": RegionRow("active", None, 1)}
    assert version(None, rows) == "0/eu-west=active@1/0/0"
    assert place("acme", FOUR, None, rows, EU, (3, True)).version == "0/eu-west=active@1/1/3"
    assert place("acme", FOUR, None, rows, EU, (3, True)).erased


def test_fallback_skips_regions_that_do_not_place() -> None:
    statuses = {"eu-central": "draining"}
    assert zone_fallback("t", EU, FOUR, statuses, {"eu-west"}) is None
    assert zone_fallback("t", EU, FOUR, {}, {"eu-west"}) == "eu-central"


@pytest.mark.parametrize(("action", "target", "bound", "source", "refused"), [
    ("pin", "us-east", {"eu": 1}, None, True),
    ("move", "eu-central", {"eu": 1}, None, False),
    ("pin", "us-east", {}, None, False),
    ("fail over", "us-east", {"eu": 2}, "eu-west", True),
    ("fail over", "eu-central", {"eu": 2}, "eu-west", False),
    ("fail over", "us-east", {}, "eu-west", False),  # nobody bound: nothing to keep in
    ("drain", "eu-west", {"eu": 1}, "us-east", False),
    ("drain", "ap-south", {"eu": 1}, "eu-central", True),
])
def test_refusals(action: str, target: str, bound: dict[str, int], source: str | None, refused: bool) -> None:
    why = refusal(action, target, ZONES, bound, source=source)
    assert (why is not None) is refused
    if why:
        assert "zone eu" in why


def _mesh(zones: str) -> str:
    regions = "".join(f'[regions.{r}]\ndatabase_url = "postgresql://u@h/{r}"\nbroker_url = "redis://h/0"\n'
                      f'peer_conninfo = "host=h dbname={r}"\n' for r in FOUR)
    return zones + regions


def test_the_mesh_file_names_zones() -> None:
    cfg = parse_config(_mesh('[zones]\neu = ["eu-west", "eu-central"]\n'), environ={})
    assert cfg.zones == ZONES and cfg.zone_of("eu-central") == "eu" and cfg.zone_of("us-east") is None


@pytest.mark.parametrize("zones", [
    '[zones]\neu = ["eu-west", "mars"]\n',
    '[zones]\neu = []\n',
    '[zones]\neu = ["eu-west"]\nwest = ["eu-west"]\n',
    '[zones]\nEU = ["eu-west"]\n',
    'zones = 3\n',
])
def test_bad_zones_are_refused_with_the_key(zones: str) -> None:
    with pytest.raises(ConfigError, match="zones"):
        parse_config(_mesh(zones), environ={})


def test_a_refused_failover_names_only_active_regions_of_the_zone_as_the_way_out() -> None:
    why = refusal("fail over", "us-east", ZONES, {"eu": 1}, source="eu-west")
    assert why is not None and "fail over to eu-central instead" in why
    # The other region of the zone is itself failed over: no way out inside the zone, and none outside.
    why = refusal("fail over", "us-east", ZONES, {"eu": 1}, source="eu-central", inactive={"eu-west"})
    assert why is not None and "instead" not in why
    assert "no other region of zone eu is active (eu-west not either)" in why and "restore" in why


def test_the_version_covers_a_change_of_the_zone_s_regions() -> None:
    """Issue 21 item 11: a zone whose regions changed while workers run changes its tenants'
    version (rm_placement_version appends ':' and the zones row's epoch once it is > 1), and only
    theirs; a zone's first row leaves it as it was (a worker without the row holds the tenant)."""
    unknown = place("t", FOUR, None, {}, ZoneBinding("eu", (), 3))  # the binding arrived, the zone's row not yet
    first = place("t", FOUR, None, {}, ZoneBinding("eu", ("eu-west", "eu-central"), 3, members_epoch=1))
    changed = place("t", FOUR, None, {}, ZoneBinding("eu", ("eu-west", "eu-central"), 3, members_epoch=2))
    assert unknown.held and not first.held
    assert unknown.version == first.version == "0//3/0" and changed.version == "0//3:2/0"
    assert place("t", FOUR, None, {}, None).version == version(None, {}) == "0//0/0"  # unzoned: as before


@pytest.mark.parametrize(("binding", "rows", "says"), [
    (ZoneBinding("eu", (), 1), {}, "the definition of zone eu (its row in the zones table) to reach this region"),
    (ZoneBinding("eu", ("mars",), 1, 1), {}, "zone eu to name a region of the mesh (it names mars)"),
    (ZoneBinding("eu", ("eu-west", "eu-central"), 1, 1),
     {"eu-west": failed("us-east"), "eu-central": failed("us-east")},
     "a region of zone eu that places runs (eu-central failed_over, eu-west failed_over)"),
])
def test_a_held_placement_says_what_it_waits_for(binding: ZoneBinding, rows: dict[str, RegionRow], says: str) -> None:
    p = place("t", FOUR, None, rows, binding)
    assert p.held and p.waits_for is not None and says in p.waits_for
    assert place("t", FOUR, None, {}, EU).waits_for is None  # placed: nothing to wait for
