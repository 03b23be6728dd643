"""``evaluate``: a history in, a verdict out — pure, so tests plant violations and see them."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bench.checker.accounting import account, resends
from bench.checker.compare import compare
from bench.checker.executions import (
    Execution,
    TaskId,
    adopted_within_lease,
    bound_by_process,
    check_order,
    executions,
    judge,
)
from bench.checker.expected import Plan, Task, plan, run_id
from bench.checker.faults import normalized
from bench.checker.history import History
from bench.checker.verdict import (
    APPLY_ERROR,
    DEAD_LETTER,
    DIVERGENCE,
    DUPLICATE_RUN,
    MISSING_EFFECT,
    OUTBOX_REJECTED,
    RESIDENCY,
    STALE_COMPLETION,
    STUCK,
    UNEXPECTED_EFFECT,
    Verdict,
)


def _runs(h: History, v: Verdict) -> None:
    """Per (tenant, key): one run id, held and succeeded in every region."""
    by_key: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for region, rows in h.runs.items():
        for tenant, key, rid, status in rows:
            by_key[(tenant, key)][region].append((rid, status))
    v.runs = len(by_key)
    for (tenant, key), per_region in sorted(by_key.items()):
        ids = {rid for rows in per_region.values() for rid, _ in rows}
        if len(ids) > 1 or any(len(rows) > 1 for rows in per_region.values()):
            v.add(DUPLICATE_RUN, f"{tenant}/{key}: {sorted(ids)} ({ {r: len(x) for r, x in per_region.items()} })")
        holders = h.holders(tenant)
        not_done = {r: [s for _, s in rows] for r, rows in per_region.items()
                    if r in holders and any(s != "succeeded" for _, s in rows)}
        absent = [r for r in holders if r not in per_region]
        outside = sorted(r for r in per_region if r not in holders)
        if outside:
            v.add(RESIDENCY, f"{tenant}/{key}: run held outside the tenant's zone in {', '.join(outside)}")
        if not_done or absent:
            v.add(STUCK, f"{tenant}/{key}: {not_done or ''}{' absent in ' + ','.join(absent) if absent else ''}")


def _plans(h: History) -> dict[str, Plan]:
    """run id -> what it must run, from the inputs the producers sent."""
    out: dict[str, Plan] = {}
    for a in h.acks:
        p = plan(a.workflow, a.input) if a.workflow else None
        if p is not None:
            out[run_id(a.tenant, a.key)] = p
    return out


def _stale_completion(task: TaskId, execs: list[Execution], by: dict[str, Any] | None, v: Verdict) -> None:
    """The output a task kept must come from an execution at the highest epoch that took effect: a
    completion of a superseded execution (the old owner's, after the heir adopted the run) is what
    the run's epoch fences off."""
    if by is None or by.get("epoch") is None:
        return
    epochs = [x.epoch for x in execs if x.effect is not None and x.epoch is not None]
    if epochs and int(by["epoch"]) < max(epochs):
        name = "/".join(str(x) for x in task if x is not None)
        v.add(STALE_COMPLETION, f"{name}: kept the output of {by.get('region')} pid {by.get('pid')} at epoch "
                                f"{by['epoch']}, superseded by an execution at epoch {max(epochs)} that took effect")


def _effects(h: History, v: Verdict, faults: list[Any]) -> None:
    by_task: dict[TaskId, list[dict[str, Any]]] = defaultdict(list)
    for e in h.ledger:
        by_task[(e["run"], e["step"], e["idx"])].append(e)
    promise = h.bounds.promise_s if h.bounds is not None else None
    if promise is None:
        v.notes.append("no lease bounds (L, rho, margin) given: lease overruns not checked, and only an "
                       "execution started before its region was cut off is forgiven")
    per_run: dict[str, dict[Task, list[Execution]]] = defaultdict(dict)
    by_region: dict[str, list[Execution]] = defaultdict(list)
    all_execs = {task: executions(entries, h.clock) for task, entries in by_task.items()}
    bound_by_process((x for execs in all_execs.values() for x in execs), h.exits)
    for task, execs in sorted(all_execs.items(), key=lambda kv: str(kv[0])):
        v.step_effects += any(x.effect is not None for x in execs)
        judge(task, execs, faults, promise, v)
        _stale_completion(task, execs, h.accepted.get(task), v)
        per_run[task[0]][(task[1], task[2])] = execs
        for x in execs:
            by_region[x.region].append(x)
    if promise is not None and h.clock == "t":  # lease ends and adoptions are wall-clock readings
        adopted_within_lease(faults, by_region, v)
    plans = _plans(h)
    succeeded = {rid for rows in h.runs.values() for _, _, rid, status in rows if status == "succeeded"}
    missing: set[TaskId] = set()
    for rid, p in sorted(plans.items()):
        done = per_run.get(rid, {})
        check_order(rid, p, done, v)
        for extra in sorted(set(done) - p.tasks, key=str):
            v.add(UNEXPECTED_EFFECT, f"{rid}/{extra[0]}/{extra[1]}: not a task of {p.workflow} for its input")
        if rid in succeeded:
            missing |= {(rid, s, i) for s, i in p.tasks
                        if not any(x.effect is not None for x in done.get((s, i), []))}
    # The product's own word too: a task it recorded done must have taken effect.
    missing |= {t for t in h.tasks if not any(x.effect is not None for x in per_run.get(t[0], {}).get((t[1], t[2]), []))}
    for gone in sorted(missing, key=str):
        v.add(MISSING_EFFECT, f"{gone}")
    unplanned = {rid for rows in h.runs.values() for _, _, rid, _ in rows} - set(plans)
    if unplanned:
        v.notes.append(f"{len(unplanned)} runs without a known workflow and input: their expected effects and "
                       "order not checked")


def _residency(h: History, v: Verdict) -> None:
    """A zoned tenant's input marker in the full dump of a region outside its zone."""
    if h.zones and not h.marker_hits:
        v.notes.append("zoned tenants without a dump of the regions outside their zones: input residency not checked")
    elif h.zones and not any(n for hits in h.marker_hits.values() for n in hits.values()):
        v.notes.append("no zoned tenant's input marker found in any dump, inside the zones either: the check saw nothing")
    for region, hits in sorted(h.marker_hits.items()):
        for tenant, n in sorted(hits.items()):
            if region not in h.holders(tenant):
                v.add(RESIDENCY, f"{region}: {n} occurrence(s) of zoned tenant {tenant}'s input in its database dump")


def evaluate(h: History) -> Verdict:
    """Judge a history: see ``bench.checker`` for the rules."""
    faults = [normalized(f, h.regions) for f in h.faults]
    v = Verdict(submissions=dict(Counter(a.path for a in h.acks)), faults=dict(Counter(f.kind for f in h.faults)),
                runs=0, step_effects=0, identical=h.identical, apply_error_count_delta=dict(h.apply_error_count_delta))
    _runs(h, v)
    account(h, v)
    resends(h, v)
    _effects(h, v, faults)
    if not h.identical:
        v.add(DIVERGENCE, "the product's verify: regions differ")
    if h.rows:
        differ, outside = compare(h.rows, h.regions, lambda t: h.holders(t) if t in h.zones else None)
        for line in differ:
            v.add(DIVERGENCE, line)
        for line in outside:
            v.add(RESIDENCY, line)
    else:
        v.notes.append("no rows of the checker's own to compare across regions: only the product's verify")
    for line in h.apply_errors:
        v.add(APPLY_ERROR, line)
    v.dead_letters = len(h.dead_letters)
    for region, sid, reason in h.dead_letters:
        if not (reason or "").strip():
            v.add(DEAD_LETTER, f"{region}: submission {sid} without a reason")
        elif sid in h.valid_submission_ids:
            v.add(DEAD_LETTER, f"{region}: valid submission {sid} dead-lettered: {reason}")
    _residency(h, v)
    for r, sid, why in h.outbox_rejected:
        v.add(OUTBOX_REJECTED, f"{r}: {sid}: {why}")
    return v
