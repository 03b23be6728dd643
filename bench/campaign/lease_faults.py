"""The five faults of issue 21, which attack the lease and the step limit instead of killing things.

- ``pause_main`` / ``pause_pool``: SIGSTOP of a worker's main process or of one pool process for
  L..3L (a GC pause, a stalled VM), then SIGCONT. A paused main process that holds the region's
  lease keeper lock takes the region's lease with it (nothing beats for it); the record then says
  so (``cut_off`` the region, ``healed`` at SIGCONT). A pool pause takes nothing: the lease stays
  with the keeper, and the paused handler resumes and must not have been run again.
- ``slow_commit``: a row lock (``SELECT … FOR UPDATE`` in an open transaction of the injector's own
  session) on a running task's row, a queued task's row or a running run's row, held for 1.5L..3L
  while the completion or claim that needs it waits; in half of them the region is also cut off
  from every peer just after the wait began and the lock is released more than L·(1+ρ)+margin
  later, links still cut: a claim that checked the lease before its lock wait and commits after it
  starts a handler without a lease, which the checker sees as a lease overrun.
- ``keeper_handover``: a ``regionmesh lease keep`` process joins the region, the session of the
  lease keeper lock's holder is ended (``pg_terminate_backend``) until the lock moves to it, and
  after L..3L ended again until the lock is back with a worker; then the extra keeper stops.
- ``swallow_overrun``: a few ``t_ledger_overrun`` runs (``regionmesh.testing.workflows``: t_ledger's
  shape, 2 s timeouts) whose seeded step catches every exception on its first attempt and runs past
  the timeout plus the reconciler's slack before its effect: only the step limit's hard end (the pool
  process ends itself) keeps the reconciler from re-queueing a live task, a second attempt from
  overlapping the first in one region, and both from taking effect.

Every record carries the wall clock (t0, t1, healed: the fault log's clock) and, in its detail, the
same start and end on this host's monotonic clock (``mono``, the ledger's other clock), and the pids
involved.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
from sqlalchemy import Connection, Engine

from bench.campaign import pgprobe
from bench.campaign.mesh import DRIFT, LEASE_S, MARGIN_S, CampaignMesh
from bench.campaign.record import Plan, Record, Sent
from bench.campaign_checker import Ack
from regionmesh.client import home_region, submit
from regionmesh.models import runs
from regionmesh.routing.hashing import home_by_hash
from regionmesh.supervisor import spawn
from regionmesh.testing.workflows import OVERRUN_TIMEOUT_S as TIMEOUT_S
from regionmesh.testing.workflows import OVERRUN_WORKFLOW as WORKFLOW
from regionmesh.workers.submission import run_id_for

PROMISE_S = LEASE_S * (1 + DRIFT) + MARGIN_S  # B: how long a region cut off may still start work
DEADLINE_SLACK_S = 5.0  # the reconciler's (REGIONMESH_DEADLINE_SLACK_S; the campaign keeps the default)
MOVE_TIMEOUT_S = 30.0
OVERRUN_WAIT_S = 90.0  # four steps, one of them overrunning ~10 s and retried, on a busy machine


class Clock:
    """One instant on both clocks the record uses."""

    def __init__(self) -> None:
        self.wall, self.mono = time.time(), time.monotonic()


def _mono(a: Clock, b: Clock) -> tuple[float, float]:
    """The record's ``mono``: its start and end on the monotonic clock."""
    return a.mono, b.mono


class LeaseFaults:
    def __init__(self, plan: Plan, mesh: CampaignMesh, record: Record, stop: threading.Event) -> None:
        self.plan = plan
        self.mesh = mesh
        self.dev = mesh.dev
        self.regions = mesh.regions
        self.record = record
        self.stop = stop
        self.overrun_runs = 0

    def _mains(self, region: str) -> list[int]:
        return [w.pid for w in self.dev.workers(region) if w.pid is not None]

    # -- pauses ------------------------------------------------------------------------------------
    def _pause(self, pid: int, seconds: float) -> tuple[Clock, Clock]:
        """SIGSTOP ``pid`` for ``seconds``, then SIGCONT (also when interrupted)."""
        start = Clock()
        os.kill(pid, signal.SIGSTOP)
        try:
            self.stop.wait(seconds)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return start, Clock()

    def pause_main(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        mains = self._mains(region)
        if not mains:
            self.record.note(f"pause_main: no worker in {region}")
            return
        pid = rng.choice(mains)
        holder = pgprobe.keeper_holder(self.mesh.engines[region], region, mains)
        keeper = holder is not None and holder.process == pid
        seconds = rng.uniform(LEASE_S, 3 * LEASE_S)
        a, b = self._pause(pid, seconds)
        lease: dict[str, Any] = {"cut_off": (region,), "healed": b.wall} if keeper else {}
        role = "holds the lease keeper lock" if keeper else "does not hold the lease keeper lock"
        self.record.fault("pause_main", region, a.wall, b.wall,
                          f"main pid {pid} ({role}) stopped for {b.wall - a.wall:.1f}s (L={LEASE_S:g}s)",
                          pids=(pid,), mono=_mono(a, b), **lease)

    def pause_pool(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        seconds = rng.uniform(LEASE_S, 3 * LEASE_S)
        pid, what = self._pool_process(region, rng, seconds)
        if pid is None:
            self.record.note(f"pause_pool: no pool process in {region}")
            return
        a, b = self._pause(pid, seconds)
        self.record.fault("pause_pool", region, a.wall, b.wall,
                          f"pool pid {pid} {what} stopped for {b.wall - a.wall:.1f}s (L={LEASE_S:g}s)",
                          pids=(pid,), mono=_mono(a, b))

    def _pool_process(self, region: str, rng: random.Random, seconds: float) -> tuple[int | None, str]:
        """A pool process of ``region``: preferably one running a step whose deadline outlasts the
        pause (a pause past a step's timeout plus the slack is the documented limit a fencing token
        answers, not what this fault tests), else any."""
        mains = set(self._mains(region))
        deadline = time.monotonic() + 10  # a step is usually running within a few seconds
        while time.monotonic() < deadline and not self.stop.is_set():
            for worker, timeout_s in pgprobe.running_steps(self.mesh.engines[region], region):
                host_pid = worker.rsplit(":", 1)[-1]
                if host_pid.isdigit() and int(host_pid) not in mains and psutil.pid_exists(int(host_pid)) \
                        and timeout_s > seconds + DEADLINE_SLACK_S:
                    return int(host_pid), f"running a step (timeout {timeout_s:g}s)"
            self.stop.wait(0.1)
        children = [c.pid for m in mains for c in psutil.Process(m).children()]
        return (rng.choice(children), "idle or between steps") if children else (None, "")

    # -- slow commits ------------------------------------------------------------------------------
    def slow_commit(self, rng: random.Random, mode: str | None = None, cut: bool | None = None) -> None:
        """``mode`` and ``cut`` are drawn from ``rng`` unless given (a run aimed at one hole)."""
        region = rng.choice(self.regions)
        drawn_mode, drawn_cut = rng.choice(sorted(pgprobe.ROW_LOCKS)), rng.random() < 0.5
        mode = drawn_mode if mode is None else mode
        cut = drawn_cut if cut is None else cut
        hold_s = rng.uniform(1.5 * LEASE_S, 3 * LEASE_S)
        engine = self.mesh.engines[region]
        links = [(region, o) for o in self.regions if o != region] + [(o, region) for o in self.regions if o != region]
        with engine.connect() as conn:
            me = pgprobe.my_backend(conn)
            row = self._lock_a_row(conn, mode, region)
            if row is None:
                self.record.note(f"slow_commit: no {mode} row to lock in {region}")
                return
            a = Clock()
            seen: dict[int, str] = {}
            cut_at: Clock | None = None
            try:
                end = a.mono + hold_s
                if cut:
                    self._watch(engine, me, seen, until=a.mono + 2.0, stop_when_seen=True)
                    for link in links:
                        self.mesh.repl_proxies[link].sever()
                    cut_at = Clock()
                    end = max(end, cut_at.mono + PROMISE_S + rng.uniform(1.0, 3.0))
                self._watch(engine, me, seen, until=end)
            finally:
                conn.rollback()
            released = Clock()
        healed: Clock | None = None
        if cut_at is not None:
            self.stop.wait(3.0)  # the links stay cut a moment: a handler started on release is in the window
            for link in links:
                self.mesh.repl_proxies[link].heal()
            healed = Clock()
            self.mesh.wait_healthy(60)
        waited = "; ".join(f"{p}: {q}" for p, q in sorted(seen.items())) or "none seen"
        detail = (f"{mode}: {pgprobe.ROW_TABLES[mode]} row {row} locked FOR UPDATE by backend {me} for "
                  f"{released.wall - a.wall:.1f}s (L={LEASE_S:g}s); waiting behind it: {waited}")
        if cut_at is None or healed is None:
            self.record.fault("slow_commit", region, a.wall, released.wall, detail, mono=_mono(a, released))
            return
        done = Clock()
        self.record.fault("slow_commit", region, cut_at.wall, done.wall,
                          f"{detail}; {region} isolated {cut_at.wall - a.wall:.1f}s after the lock, released "
                          f"{released.wall - cut_at.wall:.1f}s after the cut, healed {healed.wall - cut_at.wall:.1f}s "
                          f"after it", severed=tuple(links), healed=healed.wall, mono=_mono(cut_at, done))

    def _lock_a_row(self, conn: Connection, mode: str, region: str) -> str | None:
        """Lock a row of ``mode`` in ``conn``'s transaction, trying for up to 15 s."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not self.stop.is_set():
            row = pgprobe.lock_row(conn, mode, region)
            if row is not None:
                return row
            conn.rollback()
            self.stop.wait(0.2)
        return None

    def _watch(self, engine: Engine, me: int, seen: dict[int, str], *, until: float, stop_when_seen: bool = False) -> None:
        """Note who waits behind backend ``me`` until the monotonic ``until``."""
        while time.monotonic() < until and not self.stop.is_set():
            try:
                seen.update(pgprobe.waiters(engine, me))
            except Exception as exc:  # the database answering slowly: look again
                self.record.log(f"  (waiters: {type(exc).__name__})")
            if stop_when_seen and seen:
                return
            self.stop.wait(0.25)

    # -- lease keeper hand-off ---------------------------------------------------------------------
    def keeper_handover(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        engine = self.mesh.engines[region]
        keep = self._start_keeper(region)
        moves: list[str] = []
        try:
            self._wait(lambda: bool(pgprobe.sessions_of(engine, keep)), 30, f"lease keep of {region} to connect")
            mains = self._mains(region)
            first = pgprobe.keeper_holder(engine, region, [*mains, keep])
            a = Clock()
            there = self._move_lock(region, {keep}, [*mains, keep], moves)
            self.stop.wait(rng.uniform(LEASE_S, 3 * LEASE_S))  # the new holder beats and grants
            back = self._move_lock(region, set(mains), [*mains, keep], moves)
            b = Clock()
        finally:
            self._stop_keeper(keep)
        self.record.fault("keeper_handover", region, a.wall, b.wall,
                          f"lease keeper lock from pid {first and first.process} to lease keep pid {keep} after "
                          f"{there - a.wall:.1f}s, back to a worker after {back - a.wall:.1f}s ({'; '.join(moves)})",
                          mono=_mono(a, b), pids=tuple(p for p in (first and first.process, keep) if p is not None))

    def _start_keeper(self, region: str) -> int:
        env = dict(os.environ) | self.mesh.worker_env(region) | {"REGIONMESH_REGION": region, "PYTHONUNBUFFERED": "1"}
        return spawn([sys.executable, "-m", "regionmesh", "lease", "keep"],
                     self.mesh.root / "logs" / f"lease-keep-{region}.log", env=env)

    def _stop_keeper(self, pid: int) -> None:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            proc.wait(15)
        except psutil.TimeoutExpired:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass

    def _move_lock(self, region: str, to: set[int], candidates: list[int], moves: list[str]) -> float:
        """End the lock holder's session until a process in ``to`` holds the keeper lock; when."""
        engine = self.mesh.engines[region]
        deadline = time.monotonic() + MOVE_TIMEOUT_S
        while time.monotonic() < deadline:
            holder = pgprobe.keeper_holder(engine, region, candidates)
            if holder is not None and holder.process in to:
                moves.append(f"{time.time():.3f} held by pid {holder.process}")
                return time.time()
            if holder is not None:
                pgprobe.terminate(engine, holder.backend)
                moves.append(f"{time.time():.3f} ended backend {holder.backend} of pid {holder.process}")
            self.stop.wait(0.5)  # the keepers try the lock every reconcile interval (0.3 s)
        raise RuntimeError(f"the lease keeper lock of {region} did not move to {sorted(to)} in {MOVE_TIMEOUT_S:.0f}s")

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            self.stop.wait(0.2)

    # -- a handler that swallows its timeout -------------------------------------------------------
    def swallow_overrun(self, rng: random.Random) -> None:
        # Unzoned tenants only: a zoned tenant's input must carry its residency marker (the producers').
        zoned = set(getattr(self.plan, "zoned_tenants", []))
        tenants = [t for t in self.plan.tenants if t not in zoned]
        a = Clock()
        sent: list[tuple[str, str, str, str]] = []  # tenant, key, home, overrunning step
        for _ in range(rng.randint(2, 4)):
            tenant = rng.choice(tenants)
            home = home_region(self.mesh.config, tenant, rng.choice(self.mesh.alive())) or home_by_hash(tenant, self.regions)
            data = overrun_input(rng)
            self.overrun_runs += 1
            key = f"overrun-{self.plan.seed}-{self.overrun_runs}"
            try:
                self._submit(tenant, data, key, home, key)
            except Exception as exc:  # not acknowledged: nothing to account for
                self.record.note(f"swallow_overrun: {key} not acknowledged: {type(exc).__name__}")
                continue
            self.record.add(Sent(Ack("direct", tenant, key, home, time.time(), sid=key, workflow=WORKFLOW, input=data),
                                 key, self._resender(tenant, data, key, home), time.time()))
            sent.append((tenant, key, home, str(data["overrun"])))
        done = self._wait_finished(sent, OVERRUN_WAIT_S)
        b = Clock()
        runs_ = ", ".join(f"{k} ({s} in {h}): {done.get(k, 'unknown')}" for _, k, h, s in sent)
        self.record.fault("swallow_overrun", None, a.wall, b.wall,
                          f"{len(sent)} {WORKFLOW} runs, the first attempt of one step of each swallowing its "
                          f"{TIMEOUT_S:g}s timeout: {runs_}", mono=_mono(a, b),
                          regions=tuple(sorted({h for _, _, h, _ in sent})))

    def _submit(self, tenant: str, data: dict[str, Any], key: str, home: str, sid: str) -> None:
        submit(tenant, WORKFLOW, data, key, region=home, config=self.mesh.config, submission_id=sid, resolve_home=False)

    def _resender(self, tenant: str, data: dict[str, Any], key: str, home: str) -> Callable[[int], str]:
        def again(n: int) -> str:
            sid = f"{key}.r{n}"
            self._submit(tenant, data, key, home, sid)
            return sid
        return again

    def _wait_finished(self, sent: list[tuple[str, str, str, str]], timeout: float) -> dict[str, str]:
        """key -> the run's status in its home once every run finished, or at the timeout."""
        deadline = time.monotonic() + timeout
        out: dict[str, str] = {}
        while not self.stop.is_set():
            for tenant, key, home, _ in sent:
                try:
                    got = runs.statuses(self.mesh.engines[home], [run_id_for(tenant, key)])
                except Exception:  # the region answering slowly: ask again
                    continue
                out[key] = next(iter(got.values()))[0] if got else "absent"
            if all(s in ("succeeded", "failed", "cancelled") for s in out.values()) and len(out) == len(sent):
                break
            if time.monotonic() > deadline:
                break
            self.stop.wait(1.0)
        return out


def overrun_input(rng: random.Random) -> dict[str, Any]:
    """A ``t_ledger_overrun`` input: short steps, one of which swallows its timeout on its first
    attempt and runs well past the timeout plus the reconciler's slack (when a live task would be
    re-queued if the step limit did not end it)."""
    steps = "abcd"
    return {"sleep": {s: round(rng.uniform(0.01, 0.2), 3) for s in steps}, "overrun": rng.choice(steps),
            "overrun_s": TIMEOUT_S + DEADLINE_SLACK_S + 3.0}
