"""The lease keeper: one per region (in the process holding the region's lease lock).

Every pass it (1) beats: bumps this region's heartbeat sequence, remembering when it sent each
beat on its monotonic clock; (2) grants: acknowledges each peer's latest beat, unless that peer is
being failed over, in which case it withholds and, once its promise ran out, says so (``expired``);
(3) holds: from the grants about this region that came back through replication, works out until
when a majority acknowledged a beat it sent, and publishes that (in its database's clock, on the
early side) to ``local_lease``, which ``rm_may_work()`` reads in every claim, completion and
creation. The rules are in ``workers/lease.py``; the argument is in the README.

Each time ``LeaseLoop`` acquires the region's advisory lock its keeper starts fresh as a grantor
(``took_lock``): a process that lost the lock and took it back never times a promise from a grant
it remembers, since another process may have granted after it (every standing grant row counts
from when it took over). Every grant is written on the session that holds the lock and only while
it holds it (``models/lease.write_grant``): a keeper that lost the lock mid-pass cannot overwrite
what the new holder wrote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection

from regionmesh.errors import RegionmeshError
from regionmesh.log import event
from regionmesh.models import lease as repo
from regionmesh.workers.lease import LeaseParams, episode_expired, lease_end, promise_over, should_grant
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.singleton import SingletonLoop

KEEP_BEATS = 256  # send times kept; beats older than the lease are useless anyway


LOCK_NAME = "regionmesh.lease"


class LeaseLockLost(RegionmeshError):
    """The keeper's session no longer holds the region's lease lock: its pass stops unwritten."""

    def __init__(self, region: str, holder: str) -> None:
        self.region = region
        self.holder = holder
        super().__init__(f"{region}: the lease keeper's session lost the lock 'regionmesh.lease:{region}' "
                         f"while granting {holder}; another process keeps the lease now")


@dataclass
class LeaseKeeper:
    """The lease keeper of one process: ``conn`` is the session holding the region's lease lock."""

    rt: Runtime
    conn: Connection
    clock: Callable[[], float] = time.monotonic
    sent_at: dict[int, float] = field(default_factory=dict)
    last_grant: dict[str, float] = field(default_factory=dict)  # holder -> when my last grant committed
    started: float | None = None
    held: bool = False

    def took_lock(self, conn: Connection) -> None:
        """A new tenure of the lock, held by ``conn``: forget this process's own earlier grants
        (another process may have granted since). The send times of its own beats are kept: a grant
        of one of them still acknowledges a beat this process sent, so a blip of the lock's session
        does not drop a lease a majority still backs."""
        self.conn = conn
        self.last_grant.clear()

    def __call__(self) -> None:
        rt, me = self.rt, self.rt.region
        params = LeaseParams.from_settings(rt.config.settings)
        if self.started is None:
            self.started = self.clock()
        sent = self.clock()  # before the beat commits: the holder times its lease from before it asked
        seq = repo.beat(rt.engine, me)
        self.sent_at[seq] = sent
        for old in [s for s in self.sent_at if s <= seq - KEEP_BEATS]:
            del self.sent_at[old]
        view = repo.view(rt.engine, me)
        statuses: dict[str, str] = view["statuses"]
        for holder in rt.config.regions:
            if holder != me:
                self._grant(holder, statuses.get(holder), view, params)
        voters = [r for r in rt.config.regions if statuses.get(r) != "failed_over"]
        own = statuses.get(me)
        reason: str | None = None
        end: float | None = None
        granted_by: list[str] = []
        if view["manual"]:
            reason = f"fenced by an operator: {view['fence_reason']}"
        elif not should_grant(own):
            reason = f"this region is {own}: run 'regionmesh restore {me}'"
        else:
            grants = {g: s for g, (s, state) in view["grants"].items() if state == "granting" and g in voters}
            end, granted_by = lease_end(self.sent_at, seq, grants, len(voters), params)
            if end is None:
                reason = f"no majority of {len(voters)} acknowledged a recent beat (granting: {sorted(grants) or 'none'})"
        self._publish(end, granted_by, reason)

    def _grant(self, holder: str, status: str | None, view: dict[str, object], params: LeaseParams) -> None:
        me = self.rt.region
        mine: dict[str, tuple[int, str]] = view["mine"]  # type: ignore[assignment]
        beats: dict[str, int] = view["beats"]  # type: ignore[assignment]
        # The episode a row answers: the holder's region epoch as this copy holds it (a failover's
        # failing_over status bumps it), so an expiry never stands for a later failover.
        epochs: dict[str, int] = view["epochs"]  # type: ignore[assignment]
        episodes: dict[str, int] = view["episodes"]  # type: ignore[assignment]
        episode, answered = epochs.get(holder, 0), episodes.get(holder, 0)
        row = mine.get(holder)
        if row is not None and row[1] != "expired" and holder not in self.last_grant:
            # A keeper before this one may have granted until it stopped: count from now.
            self.last_grant[holder] = self.clock()
        if should_grant(status):
            seq = beats.get(holder)
            if seq is not None and row != (seq, "granting"):
                self._write(holder, seq, "granting", episode)
                self.last_grant[holder] = self.clock()  # after it committed: the promise starts now
            return
        if row is None:
            self._write(holder, 0, "expired", episode)  # never granted: nothing to wait out
        elif row[1] == "granting":
            self._write(holder, row[0], "withheld", episode)
            event(logging.WARNING, "lease.withheld", region=me, holder=holder, status=status)
        elif row[1] == "withheld" and promise_over(self.last_grant[holder], self.clock(), params):
            self._write(holder, row[0], "expired", episode)
            event(logging.WARNING, "lease.promise_expired", region=me, holder=holder, episode=episode)
        elif episode_expired(row, answered, episode):
            self._write(holder, row[0], "expired", episode)

    def _write(self, holder: str, seq: int, state: str, episode: int) -> None:
        me = self.rt.region
        if not repo.write_grant(self.conn, holder, me, seq, state, f"{LOCK_NAME}:{me}", episode):
            raise LeaseLockLost(me, holder)

    def _publish(self, end: float | None, granted_by: list[str], reason: str | None) -> None:
        rt = self.rt
        if end is not None:
            db_now = repo.db_now(rt.engine)
            after = self.clock()  # taken after the database's clock was read: errs early
            if end > after:
                repo.publish_lease(rt.engine, db_now + timedelta(seconds=end - after), granted_by, None)
                if not self.held:
                    self.held = True
                    event(logging.INFO, "lease.held", region=rt.region, granted_by=",".join(granted_by))
                return
            reason = "the majority's acknowledgements are older than the lease"
        repo.publish_lease(rt.engine, None, [], reason)
        if self.held:
            self.held = False
            event(logging.WARNING, "lease.lost", region=rt.region, reason=reason)


class LeaseLoop(SingletonLoop):
    """The keeper's loop: one per region (advisory lock ``regionmesh.lease``), in every worker's
    main process or in ``regionmesh lease keep``."""

    def __init__(self, rt: Runtime, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(rt, LOCK_NAME, interval_s)
        self.clock = clock
        self.keeper: LeaseKeeper | None = None

    def step(self) -> None:
        conn = self._lock_conn
        if conn is None:  # run() steps only while it holds the lock
            return
        if self.keeper is None:
            self.keeper = LeaseKeeper(self.rt, conn, clock=self.clock)
        elif self.keeper.conn is not conn:  # the lock was taken again (after a blip, or from another process)
            self.keeper.took_lock(conn)
        self.keeper()
