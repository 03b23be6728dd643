"""What every region publishes, and moving subscriptions onto the per-destination publications.

Each region publishes ``rm_pub`` (every replicated table but the payload tables) and, for every
other region, ``rm_pub_to_<dest>`` (the payload tables, row-filtered to what ``dest`` may hold:
data residency). A subscription of ``sub`` subscribes to ``rm_pub, rm_pub_to_<sub>``.
``replication setup``, ``region add``/``resync`` and ``migrate`` all publish through here.

The switch. A subscription made before the per-destination publications existed (a mesh set up
before 0013) subscribes to ``rm_pub`` only, which then still carries the payload tables. It cannot
simply be pointed at ``rm_pub_to_<sub>`` as well: pgoutput looks publications up in the catalog as
of each decoded change, so a subscription that resumes from a position before the publication was
created fails with "publication … does not exist" again and again (PostgreSQL 16). So:

1. the publisher creates ``rm_pub_to_<sub>`` while ``rm_pub`` keeps the payload tables, and notes
   its WAL position;
2. once the subscription confirmed that position, it is stopped (so no apply worker still streams
   with the old list), subscribes to both and starts again (a table in both is sent
   once; the unfiltered ``rm_pub`` wins, which is harmless while the switch lasts: only a mesh
   that had no zones column, hence no zoned rows, is switched);
3. once every subscriber of the publisher has switched, ``rm_pub`` drops the payload tables; from
   that position on they travel only through the filtered publications.

A publisher whose payload tables have no ``zone`` column yet (older than 0013) publishes them in
``rm_pub`` and nothing per destination.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import link_health, publishing, replicated_tables, subscribing
from regionmesh.names import PUBLICATION, subscription_name, subscription_publications, zoned_publication


class SwitchTimeout(RegionmeshError):
    """Subscriptions could not be moved onto their per-destination publications in time."""

    def __init__(self, pending: list[str], timeout: float) -> None:
        self.pending = pending
        super().__init__(
            f"{', '.join(pending)} did not confirm the publisher's position within {timeout:g}s, so they still "
            "subscribe to rm_pub only (which keeps the payload tables meanwhile). Check 'regionmesh replication "
            "status', then run 'regionmesh replication setup', which finishes the switch.")


def zones_for(config: MeshConfig, region: str) -> list[str]:
    """The zones whose payload rows ``region`` may hold ([] : unzoned rows only)."""
    zone = config.zone_of(region)
    return [zone] if zone else []


def publications_for(config: MeshConfig, engine: Engine, subscriber: str) -> str:
    """What a new subscription of ``subscriber`` to the publisher behind ``engine`` lists."""
    return subscription_publications(subscriber) if replicated_tables.payload_zoned(engine) else PUBLICATION


def ensure_payload_publication(config: MeshConfig, engine: Engine, dest: str) -> None:
    """``rm_pub_to_<dest>`` on the publisher behind ``engine`` (nothing before 0013)."""
    if replicated_tables.payload_zoned(engine):
        publishing.ensure_zoned_publication(engine, zoned_publication(dest), zones_for(config, dest), config.replication_user)


def publish(config: MeshConfig, engine: Engine, region: str, *, with_payload: bool = False) -> list[str]:
    """``rm_pub`` and every ``rm_pub_to_<dest>`` of ``region``. ``with_payload``: ``rm_pub`` keeps
    the payload tables (a subscriber has not switched yet). Returns tables added to ``rm_pub``."""
    zoned = replicated_tables.payload_zoned(engine)
    for dest in config.regions:
        if dest != region:
            ensure_payload_publication(config, engine, dest)
    return publishing.ensure_publication(engine, PUBLICATION, config.replication_user, with_payload=with_payload or not zoned)


def unswitched(engines: dict[str, Engine], regions: Iterable[str]) -> set[tuple[str, str]]:
    """(subscriber, publisher) pairs among ``regions`` whose subscription exists but does not list
    the subscriber's per-destination publication, where the publisher can publish one."""
    names = list(regions)
    out = set()
    for sub in names:
        for pub in names:
            if sub == pub:
                continue
            listed = subscribing.subscription_publication_names(engines[sub], subscription_name(sub, pub))
            if listed is not None and zoned_publication(sub) not in listed and replicated_tables.payload_zoned(engines[pub]):
                out.add((sub, pub))
    return out


def publish_all(config: MeshConfig, engines: dict[str, Engine], regions: Iterable[str],
                pending: set[tuple[str, str]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Step 1 for every region: its publications (``rm_pub`` keeping the payload tables where a
    subscriber in ``pending`` has not switched). Returns tables added per region, and the WAL
    position each publisher with pending subscribers noted after creating them."""
    waiting = {pub for _, pub in pending}
    added = {name: publish(config, engines[name], name, with_payload=name in waiting) for name in regions}
    return added, {pub: link_health.current_lsn(engines[pub]) for pub in waiting}


def switch(config: MeshConfig, engines: dict[str, Engine], pending: set[tuple[str, str]], marks: dict[str, str],
           *, timeout: float = 60.0, say: Callable[[str], None] = lambda _line: None) -> None:
    """Steps 2 and 3 for the pairs in ``pending`` (their subscriptions enabled and streaming).

    Raises SwitchTimeout naming the subscriptions that did not confirm in time (``rm_pub`` of
    their publishers keeps the payload tables; nothing is lost).
    """
    left = set(pending)
    deadline = time.monotonic() + timeout
    while left:
        for sub, pub in sorted(left):
            name = subscription_name(sub, pub)
            if link_health.slot_caught_up(engines[pub], name, marks[pub]):
                # Stopped first: an apply worker still streaming with the old list could confirm
                # payload changes past step 3 that it was never sent.
                subscribing.set_subscription_enabled(engines[sub], name, False)
                subscribing.wait_worker_stopped(engines[sub], name)
                subscribing.set_subscription_publications(engines[sub], name, subscription_publications(sub))
                subscribing.set_subscription_enabled(engines[sub], name, True)
                say(f"{sub}: {name} subscribes to {subscription_publications(sub)}")
                left.discard((sub, pub))
        if left and time.monotonic() > deadline:
            raise SwitchTimeout(sorted(subscription_name(s, p) for s, p in left), timeout)
        if left:
            time.sleep(0.1)
    for pub in sorted({p for _, p in pending}):
        publish(config, engines[pub], pub)
        say(f"{pub}: {PUBLICATION} no longer carries the payload tables (they go per destination)")
