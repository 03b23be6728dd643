"""The ticker: one per region (a singleton loop, like the reconciler), firing what time makes due.

Each pass, while this region holds its lease (``rm_may_work``):

* **timers**: publishes the parked tasks of its runs whose wake time the database's clock reached
  (``models/waits.py``), and wakes the ``WaitFor`` tasks that have a pending signal;
* **signals**: marks dead, with a reason, the pending signals of its finished runs and of tenants it
  places whose run never appeared;
* **schedules**: for every schedule of a tenant this region places (routing/: home, pins,
  failover, zones), submits each due tick through the normal submission path
  (``lifecycle.accept``) with the idempotency key ``rm-schedule:<name>:<tick>``
  (workers/schedule_spec.py), then records the newest tick handled in ``schedule_ticks`` at the
  tenant's registry epoch.

Why a tick is one run: its run id is UUIDv5 of the tenant and that key, and runs are created only
by the tenant's placer under its lease at the placement epoch (``rm_place_run``). A region that
fires a tick again (a failover before its record replicated, a move, a clock step) submits the
same key, which is the same run. The ticks' times are the firing region's database clock.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from regionmesh.errors import RejectedSubmission
from regionmesh.log import event
from regionmesh.models import lease, schedules, waits
from regionmesh.workers import lifecycle
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.schedule_spec import ON_TIME_S, Spec, jitter_offset, overlap_action, plan, run_key, tick_text
from regionmesh.workers.singleton import SingletonLoop
from regionmesh.workers.submission import parse_submission, submission_id_for

LOCK_NAME = "regionmesh.ticker"
MAX_TICKS_SCANNED = 10_000  # of one schedule's backlog in a pass; the rest in the next passes
FIRE_THREADS = 4  # schedules fired side by side in a pass


class Ticker(SingletonLoop):
    def __init__(self, rt: Runtime, interval_s: float = 1.0) -> None:
        super().__init__(rt, LOCK_NAME, interval_s)
        self._next_due: dict[tuple[str, str], tuple[tuple[object, ...], datetime]] = {}
        self._pool = ThreadPoolExecutor(FIRE_THREADS, thread_name_prefix=f"rm-ticker-{rt.region}")

    def step(self) -> None:
        if lease.may_work(self.rt.engine):  # without its lease a region fires nothing
            self.tick()

    def tick(self) -> tuple[int, int]:
        """One pass. Returns (woken tasks, fired ticks)."""
        woken = self.wake()
        self.bury_signals()
        return woken, self.fire_schedules()

    def wake(self) -> int:
        ids = waits.due_wakeups(self.rt.engine, self.rt.region) + waits.wake_signalled(self.rt.engine, self.rt.region)
        if ids:
            self.rt.publish_steps(ids)  # a lost publish: the reconciler re-publishes 30 s later
            event(logging.INFO, "ticker.woke", region=self.rt.region, count=len(ids))
        return len(ids)

    def bury_signals(self) -> None:
        placed = [t for t in waits.orphan_signal_tenants(self.rt.engine)
                  if self.rt.router.place(t).region == self.rt.region]
        for tenant, run_id, name, reason in waits.dead_signals(self.rt.engine, self.rt.region, placed):
            event(logging.WARNING, "signal.dead", region=self.rt.region, tenant=tenant, run=run_id, signal=name,
                  reason=reason)

    def fire_schedules(self) -> int:
        now = schedules.db_now(self.rt.engine)
        candidates = schedules.due_candidates(self.rt.engine)
        self._next_due = {(d.tenant_id, d.name): self._next_due[(d.tenant_id, d.name)]
                          for d in candidates if (d.tenant_id, d.name) in self._next_due}
        due = [d for d in candidates
               if self._next_at(d) <= now or (d.buffered_tick is not None and not d.last_run_running)]
        mine: list[tuple[schedules.Due, int]] = []
        for d in due:
            placement = self.rt.router.place(d.tenant_id)
            if placement.region == self.rt.region and not placement.held and not placement.erased:
                mine.append((d, placement.epoch))  # else another region fires it (or nobody may, for now)
        # Each schedule's ticks in order in one thread; schedules side by side (a submission waits on
        # the database and the broker, so a minute's thousand ticks do not queue behind each other).
        return sum(self._pool.map(lambda job: self._fire_or_pause(job[0], now, job[1]), mine))

    def _next_at(self, due: schedules.Due) -> datetime:
        """When the schedule's next tick (after its last one) is due, jitter included: computed once per
        change of its definition or tick state, not on every pass."""
        version = (due.last_tick, due.created_at, due.cron, due.every_s, due.tz, due.jitter_s)
        cached = self._next_due.get((due.tenant_id, due.name))
        if cached is not None and cached[0] == version:
            return cached[1]
        spec = Spec(cron=due.cron, every_s=due.every_s, tz=due.tz, jitter_s=due.jitter_s)
        tick = next(spec.ticks_after(due.last_tick or due.created_at))
        at = tick + timedelta(seconds=jitter_offset(due.tenant_id, due.name, tick, due.jitter_s))
        self._next_due[(due.tenant_id, due.name)] = (version, at)
        return at

    def _fire_or_pause(self, due: schedules.Due, now: datetime, epoch: int) -> int:
        try:
            return self._fire_one(due, now, epoch)
        except RejectedSubmission as exc:
            # Bad definition (unknown workflow, an input refused): recorded by pausing it, not
            # retried every pass.
            schedules.set_paused(self.rt.engine, due.tenant_id, due.name, True,
                                 f"paused by the ticker in {self.rt.region}: {exc.reason}")
            event(logging.ERROR, "schedule.paused", region=self.rt.region, tenant=due.tenant_id,
                  schedule=due.name, reason=exc.reason)
            return 0
        except Exception as exc:  # one schedule's trouble (a database blip) does not stop the others
            event(logging.WARNING, "schedule.fire_failed", region=self.rt.region, tenant=due.tenant_id,
                  schedule=due.name, error=exc)
            return 0

    def _fire_one(self, due: schedules.Due, now: datetime, epoch: int) -> int:
        spec = Spec(cron=due.cron, every_s=due.every_s, tz=due.tz, jitter_s=due.jitter_s)
        start = due.last_tick or due.created_at
        if due.catch_up == "none":  # older ticks would be skipped: do not scan them (a long pause of a 1 s schedule)
            start = max(start, now - timedelta(seconds=ON_TIME_S + due.jitter_s + 1))
        ready: list[datetime] = []
        offsets: list[float] = []
        for tick in spec.ticks_after(start):
            offset = jitter_offset(due.tenant_id, due.name, tick, due.jitter_s)
            if tick + timedelta(seconds=offset) > now or len(ready) >= MAX_TICKS_SCANNED:
                break
            ready.append(tick)
            offsets.append(offset)
        buffered = due.buffered_tick
        running = due.last_run_running
        if not ready and not (buffered is not None and not running):
            return 0
        todo = plan(ready, now, due.catch_up, jitter=offsets)
        fired, run_id, last = 0, None, None
        if buffered is not None and not running:  # overlap buffer_one: the kept tick goes first
            run_id = self._submit(due, buffered)
            if run_id is None:
                return 0
            buffered, running, fired = None, True, 1
        for tick in todo.fire:
            action = overlap_action(due.overlap, running)
            if action == "fire":
                submitted = self._submit(due, tick)
                if submitted is None:  # no lease now: keep what was done, the rest comes next pass
                    break
                run_id, running, fired = submitted, True, fired + 1
            elif action == "buffer":
                buffered = tick  # only the newest is kept
            last = tick
        else:
            last = todo.last  # the ticks the catch-up policy skipped are handled too
        if fired or last is not None:
            schedules.record_tick(self.rt.engine, due.tenant_id, due.name, last_tick=last or start, run_id=run_id,
                                  buffered_tick=buffered, region=self.rt.region, epoch=epoch)
        if todo.skipped:
            event(logging.INFO, "schedule.skipped", region=self.rt.region, tenant=due.tenant_id, schedule=due.name,
                  count=len(todo.skipped), catch_up=due.catch_up)
        return fired

    def _submit(self, due: schedules.Due, tick: datetime) -> uuid.UUID | None:
        """Submit one tick's run. Returns its run id, or None when this region may not create runs now."""
        key = run_key(due.name, tick)
        sub = parse_submission({"tenant_id": due.tenant_id, "workflow": due.workflow, "input": due.input,
                                "idempotency_key": key, "submission_id": submission_id_for(key),
                                "submitted_region": self.rt.region}, max_input_bytes=self.rt.config.max_input_bytes)
        started = lifecycle.accept(self.rt, sub, hops=0, message=sub.message())
        if started.outcome == "no_lease":
            return None
        event(logging.INFO, "schedule.fired", region=self.rt.region, tenant=due.tenant_id, schedule=due.name,
              tick=tick_text(tick), run=started.run_id, outcome=started.outcome)
        return started.run_id
