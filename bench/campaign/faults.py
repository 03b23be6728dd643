"""The fifteen kinds of fault, one method each. A fault picks its target with the scheduler's seeded
generator, injects, waits until the mesh can work again where that is part of the fault, and
records itself (``Record.fault``: kind, region(s), start, end, detail) for the checker, which uses
the times to tell a re-run a crash explains from a duplicate.

- ``pool_kill``: SIGKILL of a pool process, preferably one running a step;
- ``worker_kill``: SIGKILL of a worker's main process (then its pool), restarted;
- ``redis_kill`` / ``pg_kill``: SIGKILL of Redis / of the postmaster and its backends, restarted;
- ``repl_cut``: replication links cut through the proxies for 10-60 s (a region isolated, deaf,
  unheard, or one pair of regions);
- ``broker_cut``: the forwarders cannot reach one region's Redis for 10-60 s;
- ``region_failover``: a region SIGKILLed, failed over once its lease expired, brought back and
  restored;
- ``cutoff_failover``: a live region cut off from every peer (its replication links, both ways),
  still taking load through its own broker, failed over with ``--even-if-reachable`` once its
  lease expired, then healed and restored: the only fault in which a region that keeps running
  without a lease gets the chance to misbehave;
- ``move``: a graceful tenant move;
- ``pause_main``, ``pause_pool``, ``slow_commit``, ``keeper_handover``, ``swallow_overrun``: the
  faults that attack the lease and the step limit (issue 21), in ``bench.campaign.lease_faults``;
- ``handover_failover``: a keeper hand-off in the one region whose vote decides a failover (issue
  21, item 1): the third region's keeper lock moved to a ``regionmesh lease keep`` process, which
  grants the victim for L..2L; then the victim and the heir cut from each other (each still has the
  third region) and the victim failed over with ``--even-if-reachable``; as soon as the third
  region's row about it says ``withheld`` the lock is moved back to its worker, which must not
  expire the victim before the promise the other process made ran out. The victim lost its lease when that third
  region stopped granting it: the record's t0 (when the injector saw ``withheld``, no earlier than
  it happened), ``cut_off`` the victim.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.campaign import pgprobe
from bench.campaign.lease_faults import Clock, LeaseFaults
from bench.campaign.mesh import LEASE_S
from bench.campaign.record import Sent
from bench.campaign_checker import Ack
from regionmesh.client import home_region, submit
from regionmesh.models import runs
from regionmesh.ops.failover import FailoverRefused, FailoverReport, HeirLacksWork, failover, restore, set_intent
from regionmesh.supervisor import kill_tree
from regionmesh.workers.submission import run_id_for

LEASE_KINDS = ["pause_main", "pause_pool", "slow_commit", "keeper_handover", "swallow_overrun", "handover_failover"]
KINDS = ["pool_kill", "worker_kill", "redis_kill", "pg_kill", "repl_cut", "broker_cut", "region_failover",
         "cutoff_failover", "move", *LEASE_KINDS]


# A cut-off region's handler still running when it is restored: longer than the cut-off failover
# (lease expiry, 5-20 s cut, restore), so the heir's re-run is in flight when the old one ends.
LONG_STEP_S = 35.0
# Steps that end inside the cut-off victim's remaining lease: started before the cut and seen
# running by the heir (which adopts and re-runs them), completed by the victim after the cut. The
# two regions then both write the same run, step and task rows before the heal: the concurrent
# writes the conflict rule decides (mutant conflict_keeps_older shows only with them).
# One of each: the victim's worker has two pool processes, and two long steps would hold both.
MID_STEP_S = (0.5 * LEASE_S,)


class Faults(LeaseFaults):
    long_runs = 0  # runs with a long or mid first step submitted so far (their keys are numbered)

    def inject(self, kind: str, rng: random.Random, seconds: float) -> None:
        """Inject one fault of ``kind``; ``seconds`` is how long a cut lasts (other kinds ignore it).
        In a mutant's run its own fault is aimed as the mutant says (``Mutant.aim``)."""
        mutant = self.plan.mutant
        aim: dict[str, Any] = dict(mutant.aim) if mutant is not None and mutant.needs == kind else {}
        if kind == "repl_cut":
            self.repl_cut(rng, aim.get("seconds", seconds))
        elif kind == "broker_cut":
            self.broker_cut(rng, aim.get("seconds", seconds))
        else:
            {"pool_kill": self.pool_kill, "worker_kill": self.worker_kill, "redis_kill": self.redis_kill,
             "pg_kill": self.pg_kill, "region_failover": self.region_failover,
             "cutoff_failover": self.cutoff_failover, "move": self.move, "pause_main": self.pause_main,
             "pause_pool": self.pause_pool, "slow_commit": self.slow_commit, "keeper_handover": self.keeper_handover,
             "swallow_overrun": self.swallow_overrun, "handover_failover": self.handover_failover}[kind](rng, **aim)

    def pool_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        pid = None
        holder = runs.running_worker(self.mesh.engines[region], region)
        mains = {w.pid for w in self.dev.workers(region) if w.pid is not None}
        if holder and holder.rsplit(":", 1)[1].isdigit():
            pid = int(holder.rsplit(":", 1)[1])
            if pid in mains or not psutil.pid_exists(pid):
                pid = None
        what = "running a step"
        if pid is None:
            children = [c.pid for m in mains for c in psutil.Process(m).children()]
            pid, what = (rng.choice(children), "idle or between steps") if children else (None, "")
        if pid is None:
            self.record.note(f"pool_kill: no pool process in {region}")
            return
        t0 = time.time()
        psutil.Process(pid).kill()
        self.record.fault("pool_kill", region, t0, t0 + 0.5, f"pid {pid} {what}", pids=(pid,))

    def worker_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        worker = rng.choice(self.dev.workers(region))
        try:
            pids = (worker.pid, *(c.pid for c in psutil.Process(worker.pid).children(recursive=True)))
        except psutil.NoSuchProcess:
            pids = (worker.pid,)
        t0 = time.time()
        self.dev.stop_worker(region, worker.name, kill=True)  # the main process first, then its pool
        self.stop.wait(rng.uniform(1, 5))
        self.dev.start_worker(region, extra_env=self.mesh.worker_env(region))
        self.record.fault("worker_kill", region, t0, time.time(), f"main pid {worker.pid}, restarted", pids=pids)

    def redis_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        pid = self.dev.region(region).redis.pid
        self.mesh.down.add(region)
        t0 = time.time()
        kill_tree(pid)
        self.stop.wait(rng.uniform(1, 5))
        self.mesh.restart_servers()
        self.mesh.down.discard(region)
        self.record.fault("redis_kill", region, t0, time.time(), f"pid {pid}, restarted")

    def pg_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        datadir = self.dev.region(region).pg.datadir
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        t0 = time.time()
        procs = kill_tree(pid)
        self.stop.wait(rng.uniform(2, 8))
        self.mesh.restart_servers()
        self.mesh.wait_healthy(60)
        self.record.fault("pg_kill", region, t0, time.time(), f"postmaster {pid} and {len(procs) - 1} backends, restarted")

    def repl_cut(self, rng: random.Random, seconds: float) -> None:
        region = rng.choice(self.regions)
        others = [r for r in self.regions if r != region]
        mode = rng.choice(["isolated", "deaf", "unheard", "pair"])
        links = {"isolated": [(region, o) for o in others] + [(o, region) for o in others],
                 "deaf": [(region, o) for o in others],  # it hears no one
                 "unheard": [(o, region) for o in others],  # no one hears it
                 "pair": [(region, others[0]), (others[0], region)]}[mode]
        t0 = time.time()
        for link in links:
            self.mesh.repl_proxies[link].sever()
        self.stop.wait(seconds)
        for link in links:
            self.mesh.repl_proxies[link].heal()
        healed = time.time()
        self.mesh.wait_healthy(60)
        hit = (region, others[0]) if mode == "pair" else (region,)
        self.record.fault("repl_cut", None, t0, time.time(), f"{mode} {region}{'-' + others[0] if mode == 'pair' else ''} "
                          f"for {seconds:.0f}s", regions=hit, severed=tuple(links), healed=healed)

    def broker_cut(self, rng: random.Random, seconds: float) -> None:
        region = rng.choice(self.regions)
        links = [(o, region) for o in self.regions if o != region]
        t0 = time.time()
        for link in links:
            self.mesh.broker_proxies[link].sever()
        self.stop.wait(seconds)
        for link in links:
            self.mesh.broker_proxies[link].heal()
        self.record.fault("broker_cut", region, t0, time.time(), f"forwarders cannot reach {region}'s Redis for {seconds:.0f}s")

    def region_failover(self, rng: random.Random) -> None:
        victim = rng.choice(self.regions)
        heir = rng.choice(self.mesh.heirs(victim))
        self.mesh.down.add(victim)
        t0 = time.time()
        self.dev.kill_region(victim)
        report, began, heir = self._fail_over(victim, heir, even_if_reachable=False)
        adopted_by = time.time()
        self.stop.wait(rng.uniform(5, 20))
        self.mesh.restart_servers()
        self.dev.start_worker(victim, extra_env=self.mesh.worker_env(victim))
        self._restore(victim)
        restored = time.time()
        self.mesh.down.discard(victim)
        self.mesh.wait_healthy(60)
        # Back up but failed over, it grants itself no lease: it may work again once restored.
        self.record.fault("region_failover", victim, t0, time.time(),
                          f"killed, failed over to {heir} after {began - t0:.1f}s ({report.runs_adopted} runs adopted), "
                          f"back and restored after {restored - t0:.1f}s", killed=(victim,), heir=heir, adopted_at=began,
                          adopted_by=adopted_by, healed=restored)

    def _fail_over(self, victim: str, heir: str, *, even_if_reachable: bool,
                   catch_up: Callable[[str], None] | None = None) -> tuple[FailoverReport, float, str]:
        """Fail ``victim`` over to ``heir``, asking again while it is refused (the lease has not
        run out yet). Refused because a live peer holds work of the victim that ``heir`` lacks: to
        the region the refusal names instead, or, when that one may not be the heir (outside the
        victim's zone), after ``catch_up(heir)`` lets the heir receive the victim's WAL (as an
        operator would heal the link; without it the refusal stands). Returns the report, when the
        call that succeeded began (the adoption committed after it, so a repeat in the heir at a
        higher epoch cannot start before it) and the heir it adopted into."""
        deadline = time.monotonic() + 120
        while True:
            began = time.time()
            try:
                report = failover(self.mesh.config, victim, heir, timeout_s=60, even_if_reachable=even_if_reachable)
                return report, began, heir
            except HeirLacksWork as exc:
                if exc.holder in self.mesh.heirs(victim):
                    self.record.note(f"failover to {heir} refused, failing over to {exc.holder} instead: {exc}")
                    heir = exc.holder
                    continue
                if catch_up is None or time.monotonic() > deadline:
                    raise
                self.record.note(f"failover to {heir} refused and {exc.holder} may not be the heir: letting {heir} "
                                 f"catch up on {victim}'s WAL: {exc}")
                catch_up(heir)
                time.sleep(1)
            except FailoverRefused as exc:
                if time.monotonic() > deadline:
                    raise
                self.record.note(f"failover refused, retrying: {exc}")
                time.sleep(1)

    def _restore(self, victim: str) -> None:
        deadline = time.monotonic() + 180
        while True:
            try:
                restore(self.mesh.config, victim, timeout_s=20)
                return
            except Exception as exc:  # not caught up yet, or its database still starting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"restore of {victim} kept failing: {exc}") from exc
                time.sleep(1)

    def cutoff_failover(self, rng: random.Random) -> None:
        victim = rng.choice(self.regions)
        heir = rng.choice(self.mesh.heirs(victim))
        others = [r for r in self.regions if r != victim]
        links = [(victim, o) for o in others] + [(o, victim) for o in others]
        long_runs = self._steps_in_flight(victim, rng, (LONG_STEP_S,), "long")
        mid_runs = self._steps_in_flight(victim, rng, MID_STEP_S, "mid", seen_by=heir)
        t0 = time.time()
        for link in links:
            self.mesh.repl_proxies[link].sever()
        try:
            report, began, heir = self._fail_over(victim, heir, even_if_reachable=True)
            adopted_by = time.time()
            self.stop.wait(rng.uniform(5, 20))  # the victim keeps taking load through its own broker
        finally:
            for link in links:
                self.mesh.repl_proxies[link].heal()
        healed = time.time()
        self._restore(victim)
        restored = time.time()
        self.mesh.wait_healthy(60)
        # The victim may hold a lease again only once it is restored (failed over, it grants itself
        # nothing), so that ends its no-work window, not the heal of its links.
        self.record.fault("cutoff_failover", victim, t0, time.time(),
                          f"cut off (isolated) and failed over to {heir} after {began - t0:.1f}s "
                          f"({report.runs_adopted} runs adopted) while running, {long_runs} {LONG_STEP_S:g}-s and {mid_runs} "
                          f"shorter steps seen by the heir in flight there; links back after {healed - t0:.1f}s, restored after {restored - t0:.1f}s",
                          severed=tuple(links), heir=heir, adopted_at=began, adopted_by=adopted_by, healed=restored)

    def _steps_in_flight(self, victim: str, rng: random.Random, seconds: tuple[float, ...], prefix: str,
                         seen_by: str | None = None) -> int:
        """Submit one run per entry of ``seconds`` (its first step lasts that long) to tenants
        ``victim`` places, and wait (at most 10 s) until the victim started them and, with
        ``seen_by``, until that region's copy shows their first task running (so it adopts and
        re-runs them). Long ones are handlers still running there when the heir has adopted their
        runs and re-run them, and when the victim is restored (a completion that ignored the run's
        epoch would then be accepted: the stale write the epoch fences off); mid ones end inside the
        victim's remaining lease, after the cut. Returns how many started (and were seen). They are
        acknowledged submissions like any other."""
        ledger = self.mesh.ledger_dir / f"ledger-{victim}.jsonl"
        offset = ledger.stat().st_size if ledger.exists() else 0  # read only what it gains from now
        homed = [t for t in self.plan.tenants if home_region(self.mesh.config, t, victim) == victim]
        started: list[str] = []
        for tenant, first in zip(rng.sample(homed, min(len(seconds), len(homed))), seconds, strict=False):
            self.long_runs += 1
            key = f"{prefix}-{self.plan.seed}-{self.long_runs}"
            data: dict[str, Any] = {"sleep": {"a": first, "b": 0.05, "c": 0.05, "d": 0.05}}
            if (marker := self.plan.marker(tenant)) is not None:
                data["note"] = f"{marker}{key}"
            try:
                submit(tenant, "t_ledger", data, key, region=victim, config=self.mesh.config, submission_id=key,
                       resolve_home=False)
            except Exception as exc:  # not acknowledged: nothing to account for
                self.record.note(f"{prefix} run for {victim}: {type(exc).__name__}")
                continue
            self.record.add(Sent(Ack("direct", tenant, key, victim, time.time(), sid=key, workflow="t_ledger",
                                     input=data), key, None, time.time()))
            started.append(str(run_id_for(tenant, key)))
        deadline = time.monotonic() + 10
        began: set[str] = set()  # started in the victim (its ledger)
        seen: set[str] = set()  # ... and, with ``seen_by``, running in that region's copy
        while time.monotonic() < deadline and len(seen) < len(started):
            if ledger.exists():
                with ledger.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                complete = chunk[:chunk.rfind(b"\n") + 1]
                offset += len(complete)
                began |= {e["run"] for e in map(json.loads, complete.decode().splitlines())
                          if e["phase"] == "start" and e["step"] == "a" and e["run"] in set(started)}
            seen = began
            if began and seen_by is not None:
                # Short steps: cut while the first one seen is still running (waiting for the
                # other could let both end before the cut).
                seen = set(pgprobe.running_first_tasks(self.mesh.engines[seen_by], sorted(began)))
                if seen:
                    break
            time.sleep(0.1 if seen_by is not None else 0.2)
        return len(seen)

    def move(self, rng: random.Random) -> None:
        tenant = rng.choice(self.plan.tenants)
        to = rng.choice(self.regions)
        t0 = time.time()
        where, epoch = set_intent(self.mesh.config, tenant, to, "move", "campaign", rng.choice(self.regions))
        self.record.fault("move", None, t0, time.time(), f"{tenant} to {to} (written at {where}, epoch {epoch})")

    def handover_failover(self, rng: random.Random, early_cut: bool = False) -> None:
        """``early_cut``: cut victim and heir before the hand-off instead of just before the failover
        (issue 21's sequence: the heir expired the victim long before the third region withholds, so
        only the third region's promise holds the heir back). What the victim completed after the
        cut reaches the third region only: the failover to the heir is then refused and the victim
        fails over to the third region instead (``HeirLacksWork``), which is the heir recorded."""
        # With the early cut the third region becomes the heir: it must be one the victim may fail
        # over to (a region of a two-region zone has a single heir, so it is not drawn then).
        legal = [r for r in self.regions if len(self.mesh.heirs(r)) >= 2] if early_cut else []
        victim = rng.choice(legal or self.regions)
        heir = rng.choice(self.mesh.heirs(victim))  # a zone's region fails over inside its zone
        grantor = rng.choice([r for r in (self.mesh.heirs(victim) if legal else self.regions) if r not in (victim, heir)])
        cut_from = heir
        links = [(victim, heir), (heir, victim)]
        engine = self.mesh.engines[grantor]
        keep = self._start_keeper(grantor)
        moves: list[str] = []
        outcome: dict[str, tuple[FailoverReport, float, float, str] | BaseException] = {}

        def catch_up(to: str) -> None:  # the heir hears the victim again (the victim still does not hear it)
            self.mesh.repl_proxies[(to, victim)].heal()
            caught_up.append(to)

        caught_up: list[str] = []

        def fail_over() -> None:
            try:
                report, began, adopter = self._fail_over(victim, heir, even_if_reachable=True, catch_up=catch_up)
                outcome["done"] = (report, began, time.time(), adopter)  # adopted by then
            except BaseException as exc:  # handed to the fault's thread, which reports it
                outcome["done"] = exc

        try:
            self._wait(lambda: bool(pgprobe.sessions_of(engine, keep)), 30, f"lease keep of {grantor} to connect")
            mains = self._mains(grantor)
            cut = Clock()
            if early_cut:
                for link in links:
                    self.mesh.repl_proxies[link].sever()
            self._move_lock(grantor, {keep}, [*mains, keep], moves)
            self.stop.wait(rng.uniform(LEASE_S, 2 * LEASE_S))  # the new holder grants the victim
            # Cut just before the failover, so that the victim loses its lease (the third region
            # withholds) within about a second of the heir's last news of it, as in a cut-off
            # failover: what it did after the cut the heir re-runs, the documented last moments.
            if not early_cut:
                cut = Clock()
                for link in links:
                    self.mesh.repl_proxies[link].sever()
            worker = threading.Thread(target=fail_over, daemon=True)
            worker.start()
            self._wait(lambda: pgprobe.grant_state(engine, victim, grantor) in ("withheld", "expired"), 90,
                       f"{grantor} to stop granting {victim}")
            lost = Clock()
            self._move_lock(grantor, set(mains), [*mains, keep], moves)
            worker.join(150)
            done = outcome.get("done")
            if not isinstance(done, tuple):
                raise RuntimeError(f"failover of {victim} to {heir}: {done or 'still waiting after 150s'}")
            report, began, adopted_by, heir = done  # the grantor, when it holds what the victim did after the cut
            self.stop.wait(rng.uniform(5, 15))  # the victim keeps taking load through its own broker
        finally:
            for link in links:
                self.mesh.repl_proxies[link].heal()
            self._stop_keeper(keep)
        healed = time.time()
        self._restore(victim)
        restored = time.time()
        self.mesh.wait_healthy(60)
        self.record.fault("handover_failover", victim, lost.wall, time.time(),
                          f"{victim}-{cut_from} cut at {cut.wall - lost.wall:.1f}s; {grantor}'s keeper lock to lease keep "
                          f"pid {keep}; {grantor} stopped granting {victim} at 0s, its lock moved back to a worker "
                          f"({'; '.join(moves)}); failed over to {heir} after {began - lost.wall:.1f}s "
                          f"({report.runs_adopted} runs adopted"
                          f"{f'; {heir} let hear {victim} again to catch up first' if caught_up else ''}); links back after {healed - lost.wall:.1f}s, restored "
                          f"after {restored - lost.wall:.1f}s",
                          severed=tuple(links), cut_off=(victim,), heir=heir, adopted_at=began, adopted_by=adopted_by,
                          healed=restored, pids=(keep,), mono=(lost.mono, time.monotonic()))
