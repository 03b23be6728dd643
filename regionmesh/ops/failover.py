"""Failover, drain, moves, restore and the manual fence: the operations that change placement.

Every change is written in the database of the region that places the affected tenants at that
moment, serialized there with run creation (``rm_lock_placement``), so it replicates to every
peer behind everything that region created before it:

* ``tenants pin/move/unpin``: at the tenant's current placer, only while its placement there is
  what the caller saw.
* ``drain A --to B``: at A. ``restore A``: at the region that places A's tenants (its successor).
* ``failover A --to B``: at B, and only once A can hold no lease: B must hold a lease itself (a
  majority side), A is marked ``failing_over`` (its tenants stay placed at A, so no one else
  starts them), every peer stops acknowledging A's beats and, L·(1+ρ)+margin after its last
  acknowledgement on its own monotonic clock, writes that its promise expired; when enough
  expired rows to deny A a majority have reached B, A is ``failed_over`` and B adopts its
  unfinished runs at the next epoch, unless a reachable live peer applied more of A's WAL and
  holds work of A that B lacks (steps A completed after its link to B was cut): then the failover
  is refused, naming that peer as the heir (routing/succession.py).

The argument and its limits are in docs/explanation/leases.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from regionmesh.config import MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import failover as repo
from regionmesh.models import lease as lease_repo
from regionmesh.models import link_health, residency
from regionmesh.models.engine import engine_for
from regionmesh.models.registry import set_home
from regionmesh.names import subscription_name
from regionmesh.routing.membership import with_mesh_zones
from regionmesh.routing.placement import Placement, placing_regions
from regionmesh.routing.router import Router
from regionmesh.routing.succession import Missing, RunView, TaskView, ahead, furthest, missing_work
from regionmesh.routing.succession import refusal as succession_refusal
from regionmesh.routing.zones import refusal
from regionmesh.workers.app import create_app
from regionmesh.workers.definitions import Registry
from regionmesh.workers.lease import LeaseParams, answering, expired_needed, failover_ready

Progress = Callable[[str], None]
# How long before the newest run of a victim the heir holds a run the heir lacks may have been
# created (its created_at is stamped at the insert, its commit comes later; a guarded transaction
# lasts less than a lease).
CREATED_SLACK_S = 60.0


class FailoverRefused(RegionmeshError):
    pass


class HeirLacksWork(FailoverRefused):
    """Live peers applied more of ``victim``'s WAL than ``heir`` and hold work of it that ``heir``
    lacks; ``holder`` (the furthest of them) is the region to fail over to instead. ``positions``:
    how far each of them, and the heir, applied the victim's WAL (None: nothing)."""

    def __init__(self, message: str, victim: str, heir: str, holder: str, positions: dict[str, str | None]) -> None:
        self.victim = victim
        self.heir = heir
        self.holder = holder
        self.positions = positions
        super().__init__(message)


@dataclass(frozen=True)
class FailoverReport:
    from_region: str
    to_region: str
    region_epoch: int
    runs_adopted: int
    tasks_queued: int
    waited_s: float


@dataclass(frozen=True)
class RestoreReport:
    region: str
    written_at: str
    caught_up_with: list[str]


def _reachable(config: MeshConfig, region: str) -> bool:
    try:
        with engine_for(config, region).connect() as conn:
            conn.execute(text("SELECT 1"))  # a pooled connection may outlive its server: ask
            return True
    except Exception:  # any failure to connect means down
        return False


def _router(config: MeshConfig, region: str) -> Router:
    return Router(engine_for(config, region), list(config.regions), ttl_s=0.0)


def _granted_as(states: dict[str, str], state: str) -> str:
    return ", ".join(sorted(g for g, s in states.items() if s == state)) or "none"


def failover(config: MeshConfig, from_region: str, to_region: str, *, timeout_s: float | None = None,
             even_if_reachable: bool = False, override_dead_minority: bool = False,
             progress: Progress | None = None) -> FailoverReport:
    """Move ``from_region``'s tenants and unfinished runs to ``to_region`` once it can hold no lease.

    Waits (calling ``progress``) until enough peers have let their promise to ``from_region``
    expire. Raises FailoverRefused when ``to_region`` holds no lease (not a majority side), when
    ``from_region`` still answers (unless ``even_if_reachable``), on timeout, with the time left,
    and, once the lease is ruled out, when a reachable live peer has applied more of
    ``from_region``'s WAL and holds work of it that ``to_region`` lacks (the message names the peer
    to fail over to instead; ``from_region`` stays failing_over).
    ``override_dead_minority`` (a two-region mesh, or a majority that is gone for good) skips the
    majority requirements and waits only for ``to_region``'s own promise: it is safe only if no
    other region can grant ``from_region`` a lease.
    """
    if from_region == to_region or to_region not in config.regions or from_region not in config.regions:
        raise FailoverRefused(f"cannot fail {from_region} over to {to_region}: name two different regions of the mesh")
    config = with_mesh_zones(config, to_region)  # the zones as the heir holds them, not a mesh file's
    heir = engine_for(config, to_region)
    rows = _router(config, to_region).rows(fresh=True)
    heir_row = rows.get(to_region)
    if heir_row is not None and heir_row.status != "active":
        raise FailoverRefused(f"{to_region} is {heir_row.status}: fail over to an active region")
    current = rows[from_region].status if from_region in rows else "active"
    if current == "failed_over":
        raise FailoverRefused(f"{from_region} is already failed over (to {rows[from_region].successor})")
    if current != "failing_over" and not (even_if_reachable or override_dead_minority) and _reachable(config, from_region):
        raise FailoverRefused(
            f"{from_region}'s database still answers: use 'regionmesh drain {from_region} --to {to_region}' for a "
            "live region, or --even-if-reachable if it is cut off from its peers (safe: the failover still waits "
            "until it can hold no lease)")
    outside = refusal("fail over", to_region, config.zones, residency.bound_counts(heir), source=from_region,
                      inactive={r for r, row in rows.items() if row.status != "active"})
    if outside:
        raise FailoverRefused(outside)
    if not override_dead_minority and not lease_repo.may_work(heir):
        held = lease_repo.lease_row(heir)
        raise FailoverRefused(
            f"{to_region} holds no lease ({held['reason']}): failover runs only from a side that holds a majority; "
            "a two-region mesh split in two has none (see --override-dead-minority)")
    params = LeaseParams.from_settings(config.settings)
    # The episode: the epoch of from_region's failing_over status. Only expiries that answer it
    # count; one left from an earlier failover of the same region may hide a grant made since.
    episode = rows[from_region].epoch if current == "failing_over" else repo.set_region_status(
        heir, from_region, "failing_over", to_region, expect_from=("active", "draining"))
    if episode is None:
        raise FailoverRefused(f"{from_region}'s status changed meanwhile; look at 'regionmesh lease status'")
    voters = [r for r in config.regions if r == from_region or rows.get(r) is None or rows[r].status != "failed_over"]
    need = 1 if override_dead_minority else expired_needed(len(voters))
    began = time.monotonic()
    deadline = began + (timeout_s if timeout_s is not None else 3 * params.promise_s + 10)
    while True:
        states = {g: st for g, st in answering(lease_repo.grant_episodes(heir, from_region), episode).items()
                  if g in voters}
        if override_dead_minority:
            ready, missing = states.get(to_region) == "expired", int(states.get(to_region) != "expired")
        else:
            ready, missing = failover_ready(states, len(voters))
        if ready:
            break
        waited = time.monotonic() - began
        if time.monotonic() > deadline:
            raise FailoverRefused(
                f"{from_region}'s lease cannot be ruled out yet: {missing} more of {need} region(s) must let their "
                f"promise expire (each waits {params.promise_s:.1f}s after its last acknowledgement; "
                f"expired so far: {_granted_as(states, 'expired')}; "
                f"expired for an earlier failover only: {_granted_as(states, 'expired earlier')}). "
                f"{from_region} stays failing_over (its tenants wait); run the same command again to keep "
                f"waiting, or 'regionmesh restore {from_region}' to cancel")
        if progress:
            progress(f"waiting for {from_region}'s lease to expire: {missing} more region(s) of {need} "
                     f"({waited:.0f}s of at most {params.promise_s:.1f}s after their last acknowledgement)")
        time.sleep(0.5)
    _refuse_a_heir_that_lacks_work(config, from_region, to_region, rows)
    epoch = repo.set_region_status(heir, from_region, "failed_over", to_region, expect_from=("failing_over",))
    if epoch is None:
        raise FailoverRefused(f"{from_region}'s status changed meanwhile (restored?); nothing was adopted")
    adopted, tasks = repo.adopt_runs(heir, from_region, to_region)
    to_config = MeshConfig(**{**config.__dict__, "local_region": to_region})
    create_app(to_config, registry=Registry()).rm.publish_steps(tasks)
    return FailoverReport(from_region, to_region, epoch, adopted, len(tasks), time.monotonic() - began)


def _victim_progress(config: MeshConfig, subscriber: str, victim: str) -> str | None:
    """How far ``subscriber`` applied ``victim``'s WAL (its origin's persisted remote_lsn)."""
    return link_health.origin_progress(engine_for(config, subscriber), subscription_name(subscriber, victim))


def _runs(raw: dict[str, dict[str, Any]]) -> dict[str, RunView]:
    return {run: RunView(r["owner"], r["status"], {t: TaskView(*v) for t, v in r["tasks"].items()})
            for run, r in raw.items()}


def _refuse_a_heir_that_lacks_work(config: MeshConfig, victim: str, heir: str, rows: dict[str, Any]) -> None:
    """Raise HeirLacksWork when a reachable live peer applied more of ``victim``'s WAL than ``heir``
    and holds work of it that the heir lacks (routing/succession.py). Peers that do not answer are
    not asked: what only they hold is not seen."""
    peers: dict[str, str | None] = {}
    for p in config.regions:
        if p in (victim, heir) or (rows.get(p) is not None and rows[p].status == "failed_over"):
            continue
        try:
            peers[p] = _victim_progress(config, p, victim)
        except Exception:  # any failure to connect or read means down: not asked
            continue
    heir_lsn = _victim_progress(config, heir, victim)
    further = ahead(heir_lsn, peers)
    if not further:
        return  # the heir holds every commit of the victim that a reachable peer holds
    heir_engine = engine_for(config, heir)
    heir_raw = repo.victim_work(heir_engine, victim, [])
    # Runs the victim created that the heir lacks, finished ones too (a re-sent submission would
    # create one again in the heir): those created since shortly before the newest the heir holds.
    latest = repo.latest_created(heir_engine, victim)
    since = None if latest is None else latest - timedelta(seconds=CREATED_SLACK_S)
    holders: dict[str, tuple[str, list[Missing]]] = {}
    for peer, lsn in further.items():
        try:
            peer_raw = repo.victim_work(engine_for(config, peer), victim, sorted(heir_raw), since=since,
                                        since_all=latest is None)
        except Exception:  # it answered a moment ago: gone since, not asked
            continue
        unseen = sorted(set(peer_raw) - set(heir_raw))
        heir_view = _runs({**repo.victim_work(heir_engine, victim, unseen), **heir_raw} if unseen else heir_raw)
        missing = missing_work(victim, heir_view, _runs(peer_raw))
        if missing:
            holders[peer] = (lsn, missing)
    if holders:
        holder = furthest(holders)
        positions: dict[str, str | None] = {heir: heir_lsn, **{p: lsn for p, (lsn, _m) in holders.items()}}
        raise HeirLacksWork(succession_refusal(victim, heir, heir_lsn, holders), victim, heir, holder, positions)


def wait_caught_up(config: MeshConfig, publisher: str, subscriber: str, timeout: float) -> bool:
    """Until ``subscriber`` confirmed ``publisher``'s current WAL position (no clocks compared)."""
    pub = engine_for(config, publisher)
    target = link_health.current_lsn(pub)
    deadline = time.monotonic() + timeout
    while not link_health.slot_caught_up(pub, subscription_name(subscriber, publisher), target):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def placer_of(config: MeshConfig, tenant: str, via: str) -> Placement:
    """The tenant's placement as the region that places it sees it (asked through ``via``)."""
    region = via
    for _ in range(len(config.regions) + 1):
        placement = _router(config, region).place(tenant, fresh=True)
        if placement.region == region:
            return placement
        region = placement.region
    raise FailoverRefused(f"regions disagree about where {tenant} is placed; retry when replication caught up")


def set_intent(config: MeshConfig, tenant: str, region: str | None, reason: str, note: str | None, via: str,
               *, timeout: float = 30.0) -> tuple[str, int]:
    """Pin or move ``tenant`` to ``region`` (None: back to the hash), written at its current placer
    while its placement there is unchanged. Returns (where it was written, the new registry epoch)."""
    if region is not None and region not in config.regions:
        raise FailoverRefused(f"{region} is not a region of the mesh")
    config = with_mesh_zones(config, via)
    deadline = time.monotonic() + timeout
    while True:
        placement = placer_of(config, tenant, via)
        if region is not None:
            # The zone binding as the region that places the tenant holds it (bind_zone wrote it
            # there, and the expected version below covers its epoch): ``via``'s copy may not have
            # it yet, and a pin checked there could take a just-bound tenant out of its zone.
            outside = refusal(reason, region, config.zones, {placement.zone: 1} if placement.zone else {})
            if outside:
                raise FailoverRefused(f"{tenant}: {outside}")
        target = region if region is not None else placement.intent
        epoch = set_home(engine_for(config, placement.region), tenant, target, reason if region else "hash", note,
                         expect_version=placement.version)
        if epoch is not None:
            return placement.region, epoch
        if time.monotonic() > deadline:
            raise FailoverRefused(f"{tenant}'s placement kept changing for {timeout:g}s; try again")


def drain(config: MeshConfig, region: str, to_region: str) -> int:
    """Stop placing runs in ``region``; its tenants' new runs go to ``to_region`` (written at
    ``region``, which places them). Runs in flight finish where they are. Returns the region epoch."""
    if region == to_region or to_region not in config.regions:
        raise FailoverRefused(f"cannot drain {region} to {to_region}")
    config = with_mesh_zones(config, region)
    rows = _router(config, region).rows(fresh=True)
    outside = refusal("drain", to_region, config.zones, residency.bound_counts(engine_for(config, region)),
                      source=region, inactive={r for r, row in rows.items() if row.status != "active"})
    if outside:
        raise FailoverRefused(outside)
    epoch = repo.set_region_status(engine_for(config, region), region, "draining", to_region, expect_from=("active",))
    if epoch is None:
        raise FailoverRefused(f"{region} is not active; see 'regionmesh lease status'")
    return epoch


def restore(config: MeshConfig, region: str, *, timeout_s: float = 60.0) -> RestoreReport:
    """Make ``region`` active again once it has applied every placing peer's current WAL; written
    at the region that places its tenants now, so that one stops before ``region`` starts.

    Raises FailoverRefused when it is not caught up within ``timeout_s`` (nothing changed then).
    """
    rows = _router(config, region).rows(fresh=True)
    if rows.get(region) is None or rows[region].status == "active":
        raise FailoverRefused(f"{region} is active already")
    peers = [p for p in placing_regions(config.regions, rows) if p != region]
    behind = [p for p in peers if not wait_caught_up(config, p, region, timeout_s)]
    if behind:
        raise FailoverRefused(f"{region} has not applied everything from {', '.join(behind)} within {timeout_s:g}s; "
                              "check 'regionmesh replication status' and try again")
    placer = region
    seen = {region}
    while rows.get(placer) is not None and rows[placer].status in ("failed_over", "draining"):
        successor = rows[placer].successor
        if not successor or successor in seen:
            break
        placer = successor
        seen.add(placer)
    if placer == region:  # failing_over: its tenants were never placed elsewhere
        placer = rows[region].successor or region
    if repo.set_region_status(engine_for(config, placer), region, "active", None,
                              expect_from=("failed_over", "draining", "failing_over")) is None:
        raise FailoverRefused(f"{region}'s status changed meanwhile; look at 'regionmesh lease status'")
    return RestoreReport(region, placer, peers)


def fence(config: MeshConfig, region: str, reason: str) -> bool:
    """Raise ``region``'s manual fence: it creates, claims and completes nothing until unfenced."""
    return lease_repo.set_fence(engine_for(config, region), True, reason, manual=True)


def unfence(config: MeshConfig, region: str) -> bool:
    return lease_repo.set_fence(engine_for(config, region), False, None, manual=True)


@dataclass(frozen=True)
class LeaseStatus:
    region: str
    status: str
    held: bool
    remaining_s: float | None
    granted_by: list[str]
    reason: str | None
    grants: dict[str, str]  # grantor -> state, about this region, as its own copy holds them


def lease_status(config: MeshConfig) -> list[LeaseStatus]:
    """Each region's lease as its own database holds it (unreachable regions reported as such)."""
    out = []
    for name in config.regions:
        try:
            engine = engine_for(config, name)
            row = lease_repo.lease_row(engine)
            rows = _router(config, name).rows(fresh=True)
            grants = {g: st for g, (_s, st) in lease_repo.grants_about(engine, name).items()}
            status = rows[name].status if name in rows else "active"
            out.append(LeaseStatus(name, status, row["may_work"], row["remaining_s"], row["granted_by"],
                                   row["reason"], grants))
        except Exception as exc:  # an unreachable region is reported, not fatal
            out.append(LeaseStatus(name, "unreachable", False, None, [], str(exc).splitlines()[0], {}))
    return out
