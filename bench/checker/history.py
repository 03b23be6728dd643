"""The checker's inputs, as plain values: what the producers were told, what the fault log says,
what the ledger and each region's tables hold. Nothing here reads or decides.

Times (``Ack.at``, ``Fault.t0`` …, the ledger's ``t``) are seconds on one clock, the host's wall
clock by default (``History.clock = "t"``); a campaign whose fault log is kept on the host's
monotonic clock sets ``clock = "mono"`` and the ledger's ``mono`` field is read instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """The lease settings the campaign runs with: L (``lease_s``), ρ (``drift``) and the margin."""

    lease_s: float
    drift: float
    margin_s: float

    @property
    def promise_s(self) -> float:
        """L·(1+ρ)+margin: how long after a region was cut off from a majority it may still start
        work, and how long its peers wait before they let an heir take its runs."""
        return self.lease_s * (1 + self.drift) + self.margin_s

    @classmethod
    def from_env(cls) -> Bounds | None:
        """The bounds the mesh was started with, from the variables the campaign sets for it
        (``REGIONMESH_LEASE_S``, ``REGIONMESH_CLOCK_DRIFT``, ``REGIONMESH_LEASE_MARGIN_S``); None
        unless all three are set."""
        names = ("REGIONMESH_LEASE_S", "REGIONMESH_CLOCK_DRIFT", "REGIONMESH_LEASE_MARGIN_S")
        values = [os.environ.get(n) for n in names]
        if any(v is None for v in values):
            return None
        return cls(*(float(v) for v in values if v is not None))


@dataclass(frozen=True)
class Ack:
    """One acknowledged publish (the producer's publish returned), as its producer recorded it."""

    path: str  # direct | forwarded | batch | raw
    tenant: str
    key: str
    via: str  # the region whose broker it was published to
    at: float
    resent_at: float | None = None  # the producer's first re-send of this key (today's campaign)
    sid: str = ""  # this publish's submission id: fresh for every re-send
    first: bool = True  # the producer's first publish of (tenant, key), or a re-send of it
    workflow: str = ""  # what was submitted: the checker's expectations come from these two
    input: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Fault:
    """One injected fault. ``kind``, ``region``, ``t0``, ``t1``, ``regions`` and ``detail`` are what
    today's driver records; the fields after them are what the lease rule needs (a driver that does
    not fill them in is read by ``bench.checker.faults.normalized``)."""

    kind: str
    region: str | None  # the region it hit (None: several, see regions)
    t0: float  # when it began
    t1: float  # when the driver saw the mesh healthy again (reported, never a bound)
    regions: tuple[str, ...] = ()
    detail: str = ""
    pids: tuple[int, ...] = ()  # processes SIGKILLed at t0 (a pool process; a worker's main and pool)
    killed: tuple[str, ...] = ()  # regions all of whose processes died at t0
    severed: tuple[tuple[str, str], ...] = ()  # replication links cut at t0, as (subscriber, publisher)
    cut_off: tuple[str, ...] | None = None  # regions left without a majority (None: derived from severed)
    healed: float | None = None  # when the regions killed or cut off could first hold a lease again
    heir: str | None = None  # a failover: the region that adopted the victim's runs …
    adopted_at: float | None = None  # … no later than its adoption committed (read only for ledgers without epochs)
    adopted_by: float | None = None  # … and no earlier: the failover call had returned (None: not known)
    # t0 and t1 again on the host's monotonic clock (the ledger's ``mono``), where the driver read both
    mono: tuple[float, float] | None = None

    def hits(self, region: str) -> bool:
        return region == self.region or region in self.regions


@dataclass(frozen=True)
class SubmissionRecord:
    """The product's durable record of what one submission became, read from a region:
    ``outcome`` is ``created`` (this submission created ``run_id``) or ``duplicate`` (it was found
    to be ``run_id``, created by an earlier one)."""

    region: str
    submission_id: str
    run_id: str
    outcome: str


@dataclass
class History:
    regions: list[str]
    acks: list[Ack]
    faults: list[Fault]
    # region -> rows (tenant, key, run id, status) of every run of the campaign's tenants there
    runs: dict[str, list[tuple[str, str, str, str]]]
    tasks: set[tuple[str, str, int | None]]  # (run, step, index) of every step task the product says succeeded
    ledger: list[dict[str, Any]]
    identical: bool  # the product's verify
    apply_errors: list[str]
    apply_error_count_delta: dict[str, int]
    dead_letters: list[tuple[str, str | None, str | None]]  # (region, submission id, reason)
    valid_submission_ids: set[str]
    outbox_rejected: list[tuple[str, str, str | None]]  # (region, submission id, rejection)
    created: dict[tuple[str, str], float] = field(default_factory=dict)  # (tenant, key) -> run created (epoch s)
    # The lease settings (default: the ones the campaign put in the environment for its mesh); None:
    # lease overruns are not checked and only work started before a cut-off is forgiven (reported).
    bounds: Bounds | None = field(default_factory=Bounds.from_env)
    clock: str = "t"  # the ledger field on the fault log's clock: "t" (wall) or "mono"
    # The product's record of every submission (None: it keeps none; the weaker key-based check runs).
    submissions: list[SubmissionRecord] | None = None
    waiting: dict[str, str] = field(default_factory=dict)  # submission id -> region whose broker holds it …
    down_at_end: set[str] = field(default_factory=set)  # … while that broker was down at the end
    # The checker's own read of the rows it compares: table -> region -> {key: (tenant, value)}
    rows: dict[str, dict[str, dict[Any, Any]]] = field(default_factory=dict)
    # Data residency, as the campaign set it up (never read from the product): tenant -> the regions
    # of its zone (a tenant not here is unzoned), and region -> tenant -> how many times the
    # tenant's input marker occurs in that region's full database dump.
    zones: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # (run, step, index) -> the execution a succeeded task's kept output says it came from ("by":
    # region, pid, attempt, epoch, token), as the checker read it from the rows
    accepted: dict[tuple[str, str, int | None], dict[str, Any]] = field(default_factory=dict)
    marker_hits: dict[str, dict[str, int]] = field(default_factory=dict)
    # (region, pid) -> when the campaign's process watch saw that worker or pool process gone (an
    # upper bound of its death, from the operating system: bench/campaign/procwatch.py)
    exits: dict[tuple[str, int], float] = field(default_factory=dict)

    def holders(self, tenant: str) -> list[str]:
        """The regions that hold the tenant's payload rows: its zone's, or every region."""
        zone = self.zones.get(tenant)
        return [r for r in self.regions if zone is None or r in zone]
