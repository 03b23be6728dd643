"""What the campaign is asked to do (``Plan``) and what it did and saw (``Record``): the acknowledged
submissions, the faults, the notes. The producers, the fault injector, the scheduler, the re-sender
and the verdict share one ``Record``; every list in it is appended to, never rewritten."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bench.campaign_checker import Ack, Fault
from bench.mutants import Mutant
from regionmesh.routing.hashing import home_by_hash

ALL_REGIONS = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"]
ZONE, ZONED_TENANTS = "z1", 3
# A producer sends again what the region it was sent to does not hold after this long.
RESEND_AFTER_S = 30.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """The campaign's parameters and what follows from them alone."""

    seed: int
    minutes: float
    regions: list[str]
    mutant: Mutant | None = None  # a planted bug (bench/mutants.py) the checker must catch
    kinds: tuple[str, ...] = ()  # the fault kinds to draw from (empty: every kind)
    # False (--no-resend): no producer ever publishes a submission again (no journal confirm, no
    # re-sender), so a lost first publish stays lost and the checker reports it by its submission id
    resend: bool = True

    @classmethod
    def of(cls, seed: int, minutes: float, n_regions: int, mutant: Mutant | None = None,
           kinds: tuple[str, ...] = (), *, resend: bool = True) -> Plan:
        return cls(seed, minutes, ALL_REGIONS[:n_regions], mutant, kinds, resend)

    @property
    def prefix(self) -> str:
        """Every tenant of the campaign starts with it (the checker reads the runs by it)."""
        return f"cmp{self.seed}-"

    @property
    def zones(self) -> dict[str, list[str]]:
        """Data residency in the mix: with three regions or more, the first two form zone ``z1``
        and the others are outside it (they must never hold a zoned tenant's payload)."""
        return {ZONE: self.regions[:2]} if len(self.regions) >= 3 else {}

    @property
    def zoned_tenants(self) -> list[str]:
        """Tenants bound to ``z1`` before the load starts: the first names whose hash home is in
        the zone (a binding is accepted only where the tenant is placed inside the zone)."""
        members = self.zones.get(ZONE)
        if not members:
            return []
        names = (f"{self.prefix}z{i}" for i in range(1000))
        return [t for t in names if home_by_hash(t, self.regions) in members][:ZONED_TENANTS]

    def marker(self, tenant: str) -> str | None:
        """The string every input of a zoned tenant carries (the residency check looks for it in
        out-of-zone regions' database dumps); None for an unzoned tenant."""
        return f"zsecret{self.seed}{tenant.rsplit('-', 1)[-1]}x" if tenant in self.zoned_tenants else None

    @property
    def tenants(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(8 * len(self.regions))] + self.zoned_tenants


@dataclass
class Sent:
    """A producer's record of one acknowledged submission (and how to send it again)."""

    ack: Ack
    sid: str
    # publishes the submission again (the n-th re-send) under a fresh submission id, which it
    # returns; None: the journal does it
    resend: Callable[[int], str] | None
    last_sent: float
    sends: int = 1
    held: bool = False
    first_resend: float | None = None


@dataclass
class Stats:
    refused: Counter[str] = field(default_factory=Counter)  # publishes that raised (not acknowledged), by path
    resent: Counter[str] = field(default_factory=Counter)  # sent again by the producers, by path


class Record:
    """The campaign's shared log book (thread-safe where several threads append)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.sent: list[Sent] = []
        self.resends: list[Ack] = []  # every acknowledged re-send, under its own submission id
        self.sent_lock = threading.Lock()
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        self.stats = Stats()
        # Fault times are reported relative to this; run() resets it when the producers start.
        self.started = time.time()

    def add(self, sent: Sent) -> None:
        with self.sent_lock:
            self.sent.append(sent)

    def resent(self, first: Ack, sid: str, via: str | None = None) -> None:
        """A re-send of ``first`` was acknowledged under the fresh submission id ``sid``."""
        with self.sent_lock:
            self.resends.append(replace(first, sid=sid, first=False, at=time.time(), via=via or first.via))

    def note(self, text: str) -> None:
        """Something the verdict's reader should know (a fault that could not be injected, a region
        answering slowly), stamped with the wall clock."""
        self.notes.append(f"{time.time():.1f}: {text}")

    def fault(self, kind: str, region: str | None, t0: float, t1: float, detail: str = "",
              regions: tuple[str, ...] = (), **known: Any) -> None:
        """Record a fault; ``known`` fills the lease rule's fields of ``Fault`` (severed, killed,
        heir, adopted_at, healed, pids) where the driver knows them better than its detail text."""
        self.faults.append(Fault(kind, region, t0, t1, regions, detail, **known))
        self.log(f"  [{t0 - self.started:6.1f}s] {kind} {region or ','.join(regions)} ({t1 - t0:.1f}s) {detail}")
