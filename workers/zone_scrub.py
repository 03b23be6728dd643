"""The zone scrub: input of a zoned tenant that this region, outside its zone, took in before the
tenant's zone binding reached it by replication is gone one reconciler pass after it arrives.

While ``tenant_zones`` has not reached a region, that region treats the tenant as unzoned: it
forwards the tenant's submissions with an outbox entry (input included) and refuses bad ones with
a dead letter that keeps the body. Once the binding is here, each pass of the region's active
reconciler (with or without a lease: it creates no work) does what the zoned path would have:

* a sent entry is dropped: the home's broker has the message, as for any zoned submission that
  passes through (``forward.pass_on`` keeps nothing here);
* an unsent entry goes back to this region's own submit queue and is then dropped: the submit
  task passes it on to the zone or lets it wait in the broker, never in this database;
* a rejected entry keeps its ids and reason, not its input;
* dead letters of the tenant lose their body prefix (ids, size, digest and the reason stay).

Candidates come from one query per table (tenants kept here that have a binding now); the
router decides with a fresh read whether this region is outside the zone. The outbox (small: what
waits or is unconfirmed) is scanned every pass. ``dead_letters`` may be large, and a refusal made
once the binding is here already keeps no body (the refusal path reads the binding fresh), so it is
scanned only in the passes of the ``LETTERS_GRACE_S`` after the bindings last changed here (a
refusal in flight when the binding arrived commits within it). A failure is logged and left to the
next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from regionmesh.log import event
from regionmesh.models import outbox, zone_scrub
from regionmesh.workers.forward import PUBLISH_ERRORS, publish_local
from regionmesh.workers.runtime import Runtime

# Dead letters are scanned in every pass for this long after the bindings last changed here.
LETTERS_GRACE_S = 30.0


@dataclass(frozen=True)
class Scrubbed:
    """What one pass dropped: entries forgotten, entries handed back to the broker, rejected
    entries stripped of their input, dead letters stripped of their body."""

    forgotten: int = 0
    requeued: int = 0
    stripped: int = 0
    letters: int = 0


def outside_zone(rt: Runtime, tenants: list[str]) -> list[str]:
    """The tenants among ``tenants`` bound to a zone this region is not in (a fresh read)."""
    outside = []
    for tenant in tenants:
        binding, _ = rt.router.facts(tenant, fresh=True)
        if binding is not None and rt.region not in binding.regions:
            outside.append(tenant)
    return outside


def _scrub_outbox(rt: Runtime, tenants: list[str]) -> tuple[int, int, int]:
    forgotten = requeued = stripped = 0
    for entry in outbox.entries_of(rt.engine, tenants):
        if entry["rejected"]:
            stripped += outbox.drop_input(rt.engine, entry["id"])
            continue
        if not entry["sent"]:
            try:
                publish_local(rt, entry["payload"])  # the zoned path: passed on, or waits in the broker
            except PUBLISH_ERRORS as exc:  # this region's own broker: kept, tried again next pass
                event(logging.WARNING, "zone_scrub.requeue_failed", region=rt.region,
                      tenant=entry["payload"].get("tenant_id"), submission=entry["submission_id"],
                      error=type(exc).__name__)
                continue
            requeued += 1
        forgotten += outbox.forget(rt.engine, entry["id"])
    return forgotten, requeued, stripped


def scrub(rt: Runtime, *, letters: bool = True) -> Scrubbed:
    """One pass over this region's outbox and (``letters``) dead letters (see the module docstring)."""
    kept = outside_zone(rt, outbox.zoned_tenants(rt.engine))
    forgotten, requeued, stripped = _scrub_outbox(rt, kept) if kept else (0, 0, 0)
    bodies = zone_scrub.drop_bodies(rt.engine, outside_zone(rt, zone_scrub.bound_tenants_with_bodies(rt.engine))) \
        if letters else 0
    done = Scrubbed(forgotten, requeued, stripped, bodies)
    if done != Scrubbed():
        event(logging.WARNING, "zone_scrub.dropped", region=rt.region, forgotten=forgotten, requeued=requeued,
              stripped=stripped, dead_letters=bodies)
    return done


class ZoneScrubJob:
    """The reconciler's job: :func:`scrub` each pass, dead letters only while the bindings changed
    within ``LETTERS_GRACE_S``; a failure is logged and left to the next pass."""

    def __init__(self, rt: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.clock = clock
        self.version: tuple[int, str | None] | None = None  # of the bindings, as last read
        self.changed_at = 0.0

    def letters_due(self, version: tuple[int, str | None]) -> bool:
        """Whether this pass scans dead letters: the bindings changed (or this is the first pass)
        less than ``LETTERS_GRACE_S`` ago."""
        now = self.clock()
        if version != self.version:
            self.version, self.changed_at = version, now
        return now - self.changed_at <= LETTERS_GRACE_S

    def __call__(self) -> None:
        try:
            scrub(self.rt, letters=self.letters_due(zone_scrub.bindings_version(self.rt.engine)))
        except Exception as exc:  # the next pass tries again; the reconciler's other jobs go on
            self.version = None  # and scans dead letters again, however long the failures lasted
            event(logging.WARNING, "zone_scrub.failed", region=self.rt.region, error=type(exc).__name__)
