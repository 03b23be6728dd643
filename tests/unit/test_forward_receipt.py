"""The home's receipt to a forwarder outside a zoned tenant's zone: parsing, and who is owed one."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest

from regionmesh.routing.zones import ZoneBinding
from regionmesh.workers.forward_receipt import ReceiptNotice, owed_to, parse
from regionmesh.workers.runtime import Runtime

REGIONS = {"us-east", "eu-west", "eu-central"}
RUN = uuid.uuid4()


def test_a_receipt_round_trips_and_carries_no_input() -> None:
    notice = ReceiptNotice("eu-west", RUN, "sub-1")
    assert set(notice.message()) == {"region", "run_id", "submission_id"}
    assert parse(notice.message(), REGIONS) == notice
    assert parse({"region": "eu-west", "run_id": str(RUN)}, REGIONS) == ReceiptNotice("eu-west", RUN, None)


@pytest.mark.parametrize("change", [
    {"region": "mars"}, {"region": None}, {"region": "EU-WEST"}, {"run_id": None}, {"run_id": "not-a-uuid"},
    {"run_id": 5}, {"submission_id": "has space"}, {"submission_id": 7}, {"submission_id": "x" * 129},
])
def test_malformed_receipts_are_refused(change: dict[str, Any]) -> None:
    assert parse({"region": "eu-west", "run_id": str(RUN), "submission_id": "sub-1"} | change, REGIONS) is None


def _runtime(binding: ZoneBinding | None) -> Runtime:
    router = SimpleNamespace(facts=lambda tenant, fresh=False: (binding, (0, False)))
    config = SimpleNamespace(regions=dict.fromkeys(REGIONS))
    return cast(Runtime, SimpleNamespace(region="eu-west", config=config, router=router))


EU = ZoneBinding("eu", ("eu-west", "eu-central"), 1)


@pytest.mark.parametrize(("binding", "forwarder", "owed"), [
    (EU, "us-east", "us-east"),  # outside the zone: it never sees the run's row
    (EU, "eu-central", None),  # inside: the row arrives by replication
    (EU, "eu-west", None),  # itself
    (EU, "mars", None),  # not a region of the mesh
    (EU, None, None),  # not forwarded
    (None, "us-east", None),  # unzoned: the row arrives everywhere
])
def test_only_a_forwarder_outside_the_zone_is_owed_a_receipt(binding: ZoneBinding | None, forwarder: str | None,
                                                             owed: str | None) -> None:
    assert owed_to(_runtime(binding), forwarder, "T") == owed
