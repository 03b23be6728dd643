"""Failover, graceful moves, drain and restore, with epoch fencing.

Why nothing runs twice in the database, and where that stops (also in the README):

* A run is executed only by its owner region, at its owner epoch: a claim is a
  guarded update that requires ``owner_region = here`` and the task's epoch to
  equal the run's, and every row a run writes carries that epoch.
* Failover bumps the epoch of every adopted run and all its rows in the
  adopting region, so any write the dead region made and had not replicated
  loses under the conflict rule, whatever its timestamp.
* A region that comes back (its own heartbeat is stale) raises a local fence
  and claims nothing until every active peer's heartbeat, as replicated to it,
  is fresh: it has then applied what the peers wrote while it was away, the
  failover included, and ownership keeps it off the moved runs.
* A graceful move changes only where new runs go; runs in flight finish where
  they are, so a move re-runs no step.

Limits: side effects outside PostgreSQL can happen twice after a failover
(a step that was running in the dead region is run again): handlers get an
idempotency key for that. Changes the dead region committed but never
replicated are lost to the mesh (they lose to the adopted runs' epoch).
Tenants the adopting region had never seen are placed by the hash over the
remaining active regions rather than moved explicitly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from regionmesh.config import MeshConfig
from regionmesh.errors import RegionmeshError
from regionmesh.models import failover as repo
from regionmesh.models import replication as repl
from regionmesh.models.engine import engine_for
from regionmesh.models.registry import region_statuses
from regionmesh.names import subscription_name
from regionmesh.routing.hashing import home_by_hash
from regionmesh.workers.app import create_app
from regionmesh.workers.definitions import Registry


class FailoverRefused(RegionmeshError):
    pass


@dataclass(frozen=True)
class FailoverReport:
    from_region: str
    to_region: str
    region_epoch: int
    tenants_moved: int
    runs_adopted: int
    tasks_queued: int


def _engine(config: MeshConfig, region: str):  # type: ignore[no-untyped-def]
    return engine_for(config, region)


def _reachable(config: MeshConfig, region: str) -> bool:
    engine = _engine(config, region)
    try:
        with engine.connect():
            return True
    except Exception:  # any failure to connect means down
        return False
    finally:
        engine.dispose()


def failover(config: MeshConfig, from_region: str, to_region: str, *, force: bool = False) -> FailoverReport:
    """Move a dead region's tenants and unfinished runs to ``to_region`` (run against it).

    Raises FailoverRefused if ``from_region`` still answers (drain it instead) unless ``force``.
    """
    if from_region == to_region or to_region not in config.regions or from_region not in config.regions:
        raise FailoverRefused(f"cannot fail {from_region} over to {to_region}")
    if not force and _reachable(config, from_region):
        raise FailoverRefused(
            f"{from_region}'s database still answers: use 'regionmesh drain {from_region} --to {to_region}' "
            "for a live region, or --force if it is partitioned away and must not execute"
        )

    engine = _engine(config, to_region)
    try:
        epoch = repo.set_region_status(engine, from_region, "failed_over", to_region)
        tenants = repo.tenants_homed_in(engine, from_region)
        moved = repo.move_tenants(engine, tenants, to_region, "failover")
        adopted, tasks = repo.adopt_runs(engine, from_region, to_region)
    finally:
        engine.dispose()
    to_config = MeshConfig(**{**config.__dict__, "local_region": to_region})
    create_app(to_config, registry=Registry()).rm.publish_steps(tasks)
    return FailoverReport(from_region, to_region, epoch, moved, adopted, len(tasks))


def wait_caught_up(config: MeshConfig, publisher: str, subscriber: str, timeout: float) -> bool:
    """Until ``subscriber`` confirmed ``publisher``'s current WAL position."""
    pub = _engine(config, publisher)
    try:
        target = repl.current_lsn(pub)
        deadline = time.monotonic() + timeout
        while not repl.slot_caught_up(pub, subscription_name(subscriber, publisher), target):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
    finally:
        pub.dispose()


ROUTER_CACHE_S = 2.5  # workers' router cache (2 s) plus margin


def move_tenants(config: MeshConfig, tenants: list[str], old_home: str, to_region: str, *, timeout: float = 60) -> int:
    """Gracefully move tenants: the old home stops placing their runs, then the new home has
    caught up with it. Runs in flight finish where they are. Returns registry rows written."""
    engine = _engine(config, old_home)
    try:
        written = repo.move_tenants(engine, tenants, to_region, "move")
    finally:
        engine.dispose()
    # Submissions already routed by a cached decision may still start at the old home;
    # after the cache expires, only the new home places them.
    time.sleep(ROUTER_CACHE_S)
    if not wait_caught_up(config, old_home, to_region, timeout):
        raise FailoverRefused(f"{to_region} did not catch up with {old_home} within {timeout}s; the move stands, "
                              "check 'regionmesh replication status'")
    return written


def drain(config: MeshConfig, region: str, to_region: str, *, timeout: float = 60) -> int:
    """Stop placing runs in ``region`` and move its tenants to ``to_region``. Returns tenants moved."""
    engine = _engine(config, region)
    try:
        repo.set_region_status(engine, region, "draining", to_region)
        tenants = repo.tenants_homed_in(engine, region)
    finally:
        engine.dispose()
    return move_tenants(config, tenants, region, to_region, timeout=timeout)


@dataclass(frozen=True)
class RestoreReport:
    region: str
    tenants_home: int
    max_lag_s: float


def restore(config: MeshConfig, region: str, *, force: bool = False, max_lag_s: float = 5.0) -> RestoreReport:
    """Make ``region`` active again and send its tenants' new runs home; runs in flight stay.

    Refuses (FailoverRefused) while its replication lag from any active peer is above
    ``max_lag_s`` (heartbeat age as replicated to it), unless ``force``.
    """
    engine = _engine(config, region)
    try:
        ages = repl.heartbeat_ages(engine)
        statuses = {r: s for r, s in _statuses(engine).items()}
        peers = [p for p in config.regions if p != region and statuses.get(p, "active") == "active"]
        lags = {p: ages.get(p, float("inf")) for p in peers}
        worst = max(lags.values(), default=0.0)
        if worst > max_lag_s and not force:
            raise FailoverRefused(
                f"{region} is behind: " + ", ".join(f"{p} {lag:.1f}s" for p, lag in lags.items())
                + f" (bound {max_lag_s:g}s); wait for it to catch up or use --force"
            )
        repo.set_region_status(engine, region, "active", None)
        active = [r for r in config.regions if r == region or statuses.get(r, "active") == "active"]
        # Tenants that left because of a failover or a drain of this region, and hash here.
        moved_away = [t for t in repo.tenants_homed_in_registry(engine, reasons=("failover", "move"))
                      if home_by_hash(t, active) == region]
        written = repo.move_tenants(engine, moved_away, region, "hash")
        repo.set_fence(engine, False, None)
    finally:
        engine.dispose()
    return RestoreReport(region, written, worst)


def _statuses(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]

    return region_statuses(engine)
