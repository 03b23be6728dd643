"""``regionmesh tenants erase``: remove a tenant from every region, with a kept receipt.

1. The receipt (``tenant_erasures``: hash of the tenant id, state 'erased', epoch, when, where
   asked, which regions must confirm) is written in every region that answers, each time
   serialized with run creation there. From then on ``rm_placement_version`` differs from what
   any placement computed before it, and placement refuses the tenant (``Placement.erased``).
   A region that is down gets it by replication when it returns, and holds no lease before:
   the grants that give it one come from regions that wrote the receipt before granting.
2. Each region that answers erases its own copy now (``models.erasure.erase_here``: tombstones,
   then their removal, and the local tables) and confirms at the receipt's epoch. Tombstones and
   removals replicate, so a returning region loses most rows by replication alone; its
   reconciler then runs ``sweep``: the same erasure for every receipt it has not confirmed.
3. A peer may still send rows of the tenant it wrote before its own erasure (a region that was
   down sends its old WAL on return). Its confirmation comes after them in its WAL, so when a
   region sees every confirmation it makes one last pass (``sweep``'s ``final``).

Re-enabling (state 'enabled', epoch + 1) lifts the refusal; it is refused while a region has
not confirmed (it would stop that region's erasure). The receipt and confirmations are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from regionmesh.config import MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import erasure
from regionmesh.models.engine import engine_for
from regionmesh.models.residency import tenant_hash


class ErasureRefused(RegionmeshError):
    def __init__(self, tenant_hash: str, reason: str) -> None:
        self.tenant_hash = tenant_hash
        super().__init__(reason)


@dataclass
class ErasureStatus:
    tenant_hash: str
    state: str  # erased | enabled | none
    epoch: int  # the epoch the confirmations answer (the erasure's)
    requested_at: datetime | None
    requested_region: str | None
    regions: list[str]
    confirmed: dict[str, dict[str, Any]] = field(default_factory=dict)  # region -> confirmed_at, rows_removed
    unreachable: list[str] = field(default_factory=list)
    removed_now: dict[str, dict[str, int]] = field(default_factory=dict)  # region -> table -> rows (this call)

    @property
    def pending(self) -> list[str]:
        return [r for r in self.regions if r not in self.confirmed]

    @property
    def complete(self) -> bool:
        return self.state != "none" and not self.pending

    def as_dict(self) -> dict[str, Any]:
        return {"tenant_hash": self.tenant_hash, "state": self.state, "epoch": self.epoch,
                "requested_at": self.requested_at, "requested_region": self.requested_region,
                "regions": self.regions, "confirmed": self.confirmed, "pending": self.pending,
                "complete": self.complete, "unreachable": self.unreachable, "removed_now": self.removed_now}


def _receipts(config: MeshConfig, h: str) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """The receipt as each answering region holds it; the regions whose database does not answer."""
    held: dict[str, dict[str, Any] | None] = {}
    down: list[str] = []
    for region in config.regions:
        try:
            held[region] = erasure.receipt(engine_for(config, region), h)
        except DBAPIError:
            down.append(region)
    return held, down


def erasure_epoch(state: str, epoch: int) -> int:
    """The epoch confirmations of a receipt answer: its own while erased; re-enabling adds exactly one."""
    return epoch if state == "erased" else epoch - 1


def _status(config: MeshConfig, h: str, held: dict[str, dict[str, Any] | None], down: list[str]) -> ErasureStatus:
    copies = [c for c in held.values() if c is not None]
    if not copies:
        return ErasureStatus(h, "none", 0, None, None, [], unreachable=down)
    newest = max(copies, key=lambda c: (c["epoch"], c["updated_at"]))
    epoch = erasure_epoch(newest["state"], int(newest["epoch"]))
    confirmed: dict[str, dict[str, Any]] = {}
    for copy in copies:  # a confirmation reaches each region by replication: take it from any
        for region, (c_epoch, at, rows) in copy["confirmed"].items():
            if c_epoch >= epoch and region not in confirmed:
                confirmed[region] = {"confirmed_at": at, "rows_removed": rows}
    return ErasureStatus(h, str(newest["state"]), epoch, newest["requested_at"], newest["requested_region"],
                         list(newest["regions"]), confirmed, down)


def status(config: MeshConfig, tenant: str) -> ErasureStatus:
    """Which regions confirmed the tenant's erasure, from every region that answers."""
    h = tenant_hash(tenant)
    held, down = _receipts(config, h)
    return _status(config, h, held, down)


def erase(config: MeshConfig, tenant: str, via: str) -> ErasureStatus:
    """Erase ``tenant`` everywhere: the receipt in every answering region (``via`` first), then each
    answering region's own copy, confirmed; regions that do not answer erase when they return.
    Running it again resumes the same erasure. Raises ErasureRefused when ``via`` does not answer."""
    h = tenant_hash(tenant)
    held, down = _receipts(config, h)
    if via in down:
        raise ErasureRefused(h, f"{via} does not answer; run the erasure from a region that does (--region)")
    copies = [c for c in held.values() if c is not None]
    newest = max(copies, key=lambda c: (c["epoch"], c["updated_at"])) if copies else None
    if newest is not None and newest["state"] == "erased":
        epoch, at, regions = int(newest["epoch"]), newest["requested_at"], list(newest["regions"])
    else:
        epoch, at, regions = (int(newest["epoch"]) + 1 if newest else 1), None, list(config.regions)
    order = [via] + [r for r in held if r != via]
    for region in list(order):
        try:
            at = erasure.write_receipt(engine_for(config, region), tenant, h, state="erased", epoch=epoch,
                                       regions=regions, requested_region=via, requested_at=at)
        except DBAPIError:
            if region == via:
                raise
            order.remove(region)  # it went down meanwhile: it gets the receipt when it returns
    removed: dict[str, dict[str, int]] = {}
    for region in order:
        try:
            removed[region] = erasure.erase_here(engine_for(config, region), h, epoch, region)
        except DBAPIError:
            continue  # its reconciler erases and confirms when it answers again
    result = status(config, tenant)
    result.removed_now = removed
    return result


def reenable(config: MeshConfig, tenant: str, via: str, *, force: bool = False) -> ErasureStatus:
    """Accept the tenant's submissions again (the receipt stays, state 'enabled').

    Raises ErasureRefused when there is no erasure, while a region has not confirmed (unless
    ``force``: that region would then keep what it holds), or when ``via`` does not answer.
    """
    h = tenant_hash(tenant)
    held, down = _receipts(config, h)
    if via in down:
        raise ErasureRefused(h, f"{via} does not answer; run it from a region that does (--region)")
    now = _status(config, h, held, down)
    if now.state != "erased":
        raise ErasureRefused(h, f"no erasure of this tenant is in force (receipt: {now.state})")
    if now.pending and not force:
        raise ErasureRefused(h, f"{', '.join(now.pending)} have not confirmed the erasure yet; re-enabling now "
                                "would stop their erasure. Wait for them ('tenants erase T --status'), or --force")
    for region in [via] + [r for r in held if r != via]:
        erasure.write_receipt(engine_for(config, region), tenant, h, state="enabled", epoch=now.epoch + 1,
                              regions=now.regions, requested_region=via, requested_at=None)
    return status(config, tenant)


def sweep(engine: Engine, region: str, finished: set[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """One pass of ``region``'s erasures: every receipt in force that ``region`` has not confirmed
    is erased here and confirmed; every receipt all its regions confirmed gets one last pass here
    (recorded in ``finished``, the caller's memory). Returns rows removed per tenant hash."""
    out: dict[str, dict[str, int]] = {}
    for h, epoch, regions, confirmed in erasure.erasures(engine):
        if confirmed.get(region, 0) < epoch:
            out[h] = erasure.erase_here(engine, h, epoch, region)
        elif (h, epoch) not in finished and all(confirmed.get(r, 0) >= epoch for r in regions):
            out[h] = erasure.erase_here(engine, h, epoch, region, confirm=False)
            finished.add((h, epoch))
    return out
