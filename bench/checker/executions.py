"""The ledger read as executions, judged by the documented rule and nothing wider.

The rule (docs/explanation/limits.md; DESIGN 5b): a step handler is at least once across a crash — the handler
that was running when its process or region died, or when its region lost its lease, runs again;
nothing else runs twice. Read from the ledger and the fault log (B = L·(1+ρ)+margin, S =
``EFFECT_TO_COMPLETION_S``):

* An execution is a start line and its effect line (matched by region, pool pid, attempt and
  epoch). It ends at its effect, or when a fault killed its process; otherwise its end is unknown
  and it counts as a point at its start (it never took effect, so it is never a duplicate).
* **Overlap in a region**: two executions of one task in one region whose intervals overlap are
  always a violation.
* **Across regions**: two executions may overlap, and a second effect is forgiven, only when the
  earlier one's region was killed or cut off from a majority at t0 while it ran (it started by
  t0 + B and had not taken effect before t0 − S), and the later one started after t0 in the heir of
  a failover of that region (that fault or a later one), after the heir adopted the run: at a
  higher run epoch (a ledger without epochs: after the fault log's ``adopted_at``).
* **In one region**, a second effect is forgiven only when the earlier execution's process was
  killed while it ran, or its region lost its lease while it ran, and the repeat started after
  that fault (at a higher attempt or epoch, when the ledger says).
* **Lease overrun**: an execution that starts in a region more than B after a fault cut it off
  (or killed it), before the region could hold a lease again, is a violation whatever the product's
  tables say; so is a claim there that saw its lease end past t0 + B, and a repeat at a higher
  epoch in another region that started before the lease the first execution saw had ended (the
  heir adopted while the old owner still held its lease).
* **Order**: every execution starts after an effect of each task it depends on.

S covers the time from a handler's effect to its completion being durable in its region (the
return, the completion commit, under a starved two-core machine seconds): a completion lost with
its region makes the step run again although its effect had landed.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.checker.expected import Plan, Task
from bench.checker.faults import killed_process, lease_lost, no_work_window
from bench.checker.history import Fault
from bench.checker.verdict import (
    DUPLICATE_EFFECT,
    LEASE_OVERRUN,
    ORDER,
    OVERLAP_ACROSS,
    OVERLAP_IN_REGION,
    Verdict,
)

EFFECT_TO_COMPLETION_S = 8.0

TaskId = tuple[str, str, int | None]  # (run, step, index)


@dataclass
class Execution:
    region: str
    start: float
    effect: float | None
    attempt: int | None = None
    pid: int | None = None
    epoch: int | None = None
    lease_until: float | None = None
    end: float | None = None  # effect, or when a fault killed it; None: unknown
    # When its pool process had surely moved on: its next start of another execution (a prefork pool
    # process runs one handler at a time), or the process seen gone (``bound_by_process``).
    gone_by: float | None = None

    def __str__(self) -> str:
        eff = f"effect {self.effect:.3f}" if self.effect is not None else "no effect"
        who = f" pid {self.pid}" if self.pid is not None else ""
        epoch = f" epoch {self.epoch}" if self.epoch is not None else ""
        return f"{self.region}{who} attempt {self.attempt}{epoch} start {self.start:.3f} {eff}"

    @property
    def last(self) -> float:
        return self.end if self.end is not None else self.start


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def executions(entries: Iterable[Mapping[str, Any]], clock: str = "t") -> list[Execution]:
    """The ledger lines of one task as executions, in start order."""
    out: list[Execution] = []
    open_: dict[tuple[Any, ...], list[Execution]] = defaultdict(list)
    for e in sorted(entries, key=lambda e: float(e.get(clock, e["t"]))):
        at = float(e.get(clock, e["t"]))
        slot = (e["region"], e.get("pid"), e.get("attempt"), e.get("epoch"))
        if e["phase"] == "start":
            ex = Execution(e["region"], at, None, _int(e.get("attempt")), _int(e.get("pid")), _int(e.get("epoch")),
                           None if e.get("lease_until") is None else float(e["lease_until"]))
            out.append(ex)
            open_[slot].append(ex)
        elif open_[slot]:
            open_[slot].pop(0).effect = at
        else:  # an effect whose start line is missing: its own execution
            out.append(Execution(e["region"], at, at, _int(e.get("attempt")), _int(e.get("pid")), _int(e.get("epoch"))))
    return sorted(out, key=lambda x: x.start)


def _ran_through(ex: Execution, f: Fault, promise_s: float) -> bool:
    """Whether ``ex`` was running when ``f`` took its region's lease (killed or cut off)."""
    if ex.region not in lease_lost(f):
        return False
    # Killing a region takes a moment after t0 (one process after another), and killed or cut off, it
    # holds its lease until that ends: either way it may have started work until t0 + B.
    return ex.start <= f.t0 + promise_s and (ex.effect is None or ex.effect >= f.t0 - EFFECT_TO_COMPLETION_S)


def _higher(a: int | None, b: int | None) -> bool:
    """b > a, or unknown."""
    return a is None or b is None or b > a


def forgiven_across(first: Execution, then: Execution, faults: Sequence[Fault], promise_s: float) -> str | None:
    """The rule that lets ``then`` (another region) repeat ``first``, or None: ``first``'s region
    lost its lease (killed or cut off) while it ran, and ``then`` started after that, in the heir of
    a failover of ``first``'s region, after that heir adopted the run. The fault that took the lease
    and the failover may be two faults (a region cut off, restored with the task still waiting for
    its deadline, then killed and failed over). The run's epoch in the ledger is the evidence of the
    adoption (a claim at a higher epoch comes after it); a ledger without epochs falls back on the
    fault log's ``adopted_at``."""
    lost = [f for f in faults if _ran_through(first, f, promise_s) and then.start >= f.t0]
    if not lost:
        return None
    epochs = first.epoch is not None and then.epoch is not None
    if epochs and not _higher(first.epoch, then.epoch):
        return None
    for g in faults:
        if (g.heir != then.region or first.region not in (g.region, *lease_lost(g)) or g.t0 < min(f.t0 for f in lost)
                or (g.adopted_at is None and not epochs) or (g.adopted_at is not None and then.start < g.adopted_at)):
            continue
        f = next(f for f in lost if f.t0 <= g.t0)
        how = "region died" if first.region in f.killed else "lease lost"
        kinds = f.kind if f is g else f"{f.kind}, then {g.kind}"
        return f"{how}, heir adopted at a higher epoch ({kinds})"
    return None


def heir_within_lease(first: Execution, then: Execution) -> bool:
    """Whether ``then`` ran at a higher epoch in another region before the lease ``first``'s region
    read at its claim had ended: the heir adopted while the old owner still held its lease."""
    return (first.lease_until is not None and first.region != then.region and then.start < first.lease_until
            and first.epoch is not None and then.epoch is not None and then.epoch > first.epoch)


def forgiven_in_region(first: Execution, then: Execution, faults: Sequence[Fault], promise_s: float) -> str | None:
    """The rule that lets ``then`` (same region, after ``first`` ended) repeat ``first``, or None."""
    for f in faults:
        if then.start < f.t0:
            continue
        if (killed_process(f, first.region, first.pid) and first.start <= f.t1
                and (first.effect is None or first.effect >= f.t0 - EFFECT_TO_COMPLETION_S)):
            return f"process killed ({f.kind})"
        if _ran_through(first, f, promise_s) and (_higher(first.attempt, then.attempt) or _higher(first.epoch, then.epoch)):
            return f"lease lost, re-queued in the region ({f.kind})"
    return None


def bound_by_process(execs: Iterable[Execution], exits: Mapping[tuple[str, int], float]) -> None:
    """Set each execution's ``gone_by`` from its pool process (same region and pid): the next start
    of another execution there, or the time the campaign's process watch saw the process gone
    (``exits``, from the operating system), whichever is first. The campaign's workers are prefork
    pools, whose processes run one handler at a time (inline continuation runs a chain's steps one
    after another too), so an execution that never took effect (a handler that swallowed its soft
    timeout and returned, one the step limit's hard end killed with its process) had ended by
    then. Without this, such an execution would last until a fault killed its region much later,
    and the product's retry in between would read as an overlap. A threads pool would break the
    premise of the first bound, not of the second."""
    by_process: dict[tuple[str, int], list[Execution]] = defaultdict(list)
    for ex in execs:
        if ex.pid is not None:
            by_process[(ex.region, ex.pid)].append(ex)
    for proc, same in by_process.items():
        starts = sorted(x.start for x in same)
        gone = exits.get(proc)
        for a in same:
            i = bisect_right(starts, a.start)
            bounds = [starts[i]] if i < len(starts) else []
            if gone is not None and gone >= a.start:
                bounds.append(gone)
            a.gone_by = min(bounds) if bounds else None


def _overlap(a: Execution, b: Execution) -> bool:
    return a.start < b.last and b.start < a.last or a.start == b.start


def judge(task: TaskId, execs: list[Execution], faults: Sequence[Fault], promise_s: float | None, v: Verdict) -> None:
    """Overlaps, second effects and lease overruns of one task's executions (in start order)."""
    promise = promise_s if promise_s is not None else 0.0  # no bounds: forgive nothing started after t0
    for ex in execs:
        if ex.effect is not None:
            ex.end = ex.effect
        else:
            # A kill lands between the fault's t0 and its t1 (the driver finds the processes, then
            # kills them): an execution that started inside that window in a killed process ended
            # by t1, one that started before it ended by t0.
            ends = [f.t0 if f.t0 >= ex.start else f.t1 for f in faults
                    if f.t1 >= ex.start and killed_process(f, ex.region, ex.pid)]
            if ex.gone_by is not None:
                ends.append(ex.gone_by)
            ex.end = min(ends) if ends else None
            v.open_executions += ex.end is None
    name = "/".join(str(x) for x in task if x is not None)
    for i, a in enumerate(execs):
        for b in execs[i + 1:]:
            if not _overlap(a, b):
                continue
            if a.region == b.region:
                v.add(OVERLAP_IN_REGION, f"{name}: {a} | {b}")
            elif forgiven_across(a, b, faults, promise) is None:
                v.add(OVERLAP_ACROSS, f"{name}: {a} | {b}")
    for i, a in enumerate(execs):
        for b in execs[i + 1:]:
            if heir_within_lease(a, b):
                v.add(LEASE_OVERRUN, f"{name}: {b.region} started it at epoch {b.epoch} at {b.start:.3f}, before the "
                                     f"lease {a.region} saw at its claim ended ({a.lease_until:.3f}): {a} | {b}")
    with_effect = [i for i, x in enumerate(execs) if x.effect is not None]
    for i in with_effect[:-1]:  # superseded by a later execution that took effect too
        a, b = execs[i], execs[i + 1]
        if a.region == b.region:
            rule = None if _overlap(a, b) else forgiven_in_region(a, b, faults, promise)
        else:
            rule = forgiven_across(a, b, faults, promise)
        if rule is None:
            v.add(DUPLICATE_EFFECT, f"{name}: {len(with_effect)} effects; not forgiven: {a} then {b}")
        else:
            v.crash_reruns[rule] = v.crash_reruns.get(rule, 0) + 1
    if promise_s is None:
        return
    for ex in execs:
        for f in faults:
            window = no_work_window(f, ex.region, promise_s)
            if window is None:
                continue
            if window[0] < ex.start < window[1]:
                v.add(LEASE_OVERRUN, f"{name}: {ex.region} started it {ex.start - f.t0:.1f}s after it lost its lease "
                                     f"({f.kind} at {f.t0:.3f}; bound {promise_s:.2f}s): {ex}")
            elif (ex.lease_until is not None and f.t0 <= ex.start < window[1]
                  and ex.lease_until > f.t0 + promise_s):
                v.add(LEASE_OVERRUN, f"{name}: {ex.region} claimed it at {ex.start:.3f} with a lease until "
                                     f"{ex.lease_until:.3f}, past {f.kind} at {f.t0:.3f} + {promise_s:.2f}s: {ex}")


def adopted_within_lease(faults: Sequence[Fault], by_region: Mapping[str, Sequence[Execution]], v: Verdict) -> None:
    """A failover's heir took the victim's runs (its adoption had committed by ``adopted_by``) while
    the victim still held a lease it had read at a claim made before then: the peers that let the
    heir adopt did not wait out the promise their grants made (a keeper that expired a grant from
    a stale memory, issue 21 item 1). Any claim counts, not only one of a task the heir ran again:
    the lease is the region's, and a victim cut off from its heir works on runs the heir never
    saw. Same host, one clock: the lease end is the victim's database's, the adoption the driver's."""
    for f in faults:
        if f.heir is None or f.adopted_by is None or f.region is None:
            continue
        seen = [x for x in by_region.get(f.region, ()) if x.lease_until is not None and x.start < f.adopted_by]
        late = max(seen, key=lambda x: x.lease_until or 0.0, default=None)
        if late is not None and late.lease_until is not None and late.lease_until > f.adopted_by:
            v.add(LEASE_OVERRUN, f"{f.heir} had adopted {f.region}'s runs by {f.adopted_by:.3f} ({f.kind} at "
                                 f"{f.t0:.3f}), {late.lease_until - f.adopted_by:.2f}s before the lease {f.region} "
                                 f"read at a claim at {late.start:.3f} ended ({late.lease_until:.3f})")


def check_order(run: str, plan: Plan, by_task: Mapping[Task, list[Execution]], v: Verdict) -> None:
    """Every execution of a task starts after an effect of each task it depends on."""
    for task, deps in plan.after.items():
        for ex in by_task.get(task, []):
            for dep in sorted(deps, key=str):
                effects = [x.effect for x in by_task.get(dep, []) if x.effect is not None]
                if not any(t <= ex.start for t in effects):
                    first = f"first effect {min(effects):.3f}" if effects else "no effect"
                    v.add(ORDER, f"{run}/{task[0]}{'' if task[1] is None else '/' + str(task[1])} started "
                                 f"{ex.start:.3f} before {dep[0]}{'' if dep[1] is None else '/' + str(dep[1])} "
                                 f"took effect ({first}): {ex}")
