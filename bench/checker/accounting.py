"""Every acknowledged publish accounted for by its submission id.

With the product's record of submissions (``History.submissions``: which submission created a run,
which were found to duplicate it), each acknowledged publish must be one of: ``created`` (it
created its run), ``duplicate`` (it was found to be a run an earlier submission created),
``dead-lettered`` (with a reason), or ``waiting`` (provably still in the queue of a broker that was
down at the end). Anything else is lost. A first publish with no record whose run a re-send of the
same key created is a *lost first publish closed by a re-send* (the durability contract does not
rely on producers re-sending, so it is a violation, reported apart); a first publish recorded as a
duplicate of the run its re-send created was only *delayed*. Both are counted by hand-off.

Without that record (today's product), the weaker check runs: an acknowledged (tenant, key) with
no run in any region is lost; a lost first publish masked by a re-send of the same key is invisible.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from bench.checker.expected import run_id
from bench.checker.history import Ack, Fault, History
from bench.checker.verdict import DUPLICATE_RUN, LOST, LOST_FIRST, Verdict

# Faults that can lose a message between a broker and the process that popped it (the pop window
# of the durability contract), and ones that can lose a broker's acknowledged writes.
_POP_WINDOW = frozenset({"worker_kill", "region_failover"})
_BROKER = frozenset({"redis_kill"})


def hand_off(ack: Ack, created_in: str | None, until: float, faults: Sequence[Fault]) -> str:
    """Where a publish acknowledged at ``ack.at`` was most likely lost, from the fault log: a worker
    main process or region killed in the region it was sent to before ``until`` (the pop window);
    that region's Redis killed (the broker); sent to a region other than where its run was created
    (a forward); else unexplained. A submit task's own retry (a new message, the old one acked,
    waiting in a worker's memory until due) is lost the same way as the pop window, by a killed
    worker, and the fault log cannot tell the two apart."""
    hit = [f for f in faults if ack.at <= f.t0 <= until and (f.hits(ack.via) or ack.via in f.killed)]
    if any(f.kind in _POP_WINDOW or ack.via in f.killed for f in hit):
        return "pop window"
    if any(f.kind in _BROKER for f in hit):
        return "broker restart"
    if created_in is not None and created_in != ack.via:
        return "forward"
    return "unexplained"


def _describe(a: Ack) -> str:
    return f"{a.path} {'first publish' if a.first else 're-send'} {a.sid or '-'} via {a.via} at {a.at:.3f}: " \
           f"tenant {a.tenant} key {a.key}"


def account(h: History, v: Verdict) -> None:
    """Fill in ``v``'s lost, lost-first and delayed findings and counts."""
    if h.submissions is None:
        _by_key(h, v)
        return
    v.accounting = "submission id"
    records: dict[str, set[tuple[str, str]]] = defaultdict(set)  # sid -> {(run, outcome)}
    where: dict[str, str] = {}  # sid -> region that recorded it
    creators: dict[str, set[str]] = defaultdict(set)  # run -> sids that created it
    for r in h.submissions:
        records[r.submission_id].add((r.run_id, r.outcome))
        where.setdefault(r.submission_id, r.region)
        if r.outcome == "created":
            creators[r.run_id].add(r.submission_id)
    for sid, outs in sorted(records.items()):
        if len(outs) > 1:
            v.add(DUPLICATE_RUN, f"submission {sid} recorded as {sorted(outs)}")
    for run, sids in sorted(creators.items()):
        if len(sids) > 1:
            v.add(DUPLICATE_RUN, f"run {run} created by {len(sids)} submissions: {sorted(sids)}")
    dead = {sid: reason for _, sid, reason in h.dead_letters if sid and (reason or "").strip()}
    acks_by_key: dict[tuple[str, str], list[Ack]] = defaultdict(list)
    for a in h.acks:
        acks_by_key[(a.tenant, a.key)].append(a)
    counts: Counter[str] = Counter()
    for a in h.acks:
        outs = records.get(a.sid, set())
        if outs:
            run, outcome = min(outs)
            if run != run_id(a.tenant, a.key):
                v.add(LOST, f"{_describe(a)}: recorded as {outcome} of run {run}, not its key's run")
                continue
            counts[outcome] += 1
            if outcome == "duplicate" and a.first:
                resend_created = [b for b in acks_by_key[(a.tenant, a.key)]
                                  if not b.first and b.sid in creators.get(run, set())]
                if resend_created:
                    label = hand_off(a, where.get(resend_created[0].sid), resend_created[0].at, h.faults)
                    v.delayed_first[label] = v.delayed_first.get(label, 0) + 1
            continue
        if a.sid in dead:
            counts["dead-lettered"] += 1
            continue
        if a.sid in h.waiting and h.waiting[a.sid] in h.down_at_end:
            counts["waiting"] += 1
            continue
        run = run_id(a.tenant, a.key)
        resend_created = [b for b in acks_by_key[(a.tenant, a.key)]
                          if not b.first and b.sid in creators.get(run, set())]
        if a.first and resend_created:
            label = hand_off(a, where.get(resend_created[0].sid), resend_created[0].at, h.faults)
            v.lost_first[label] = v.lost_first.get(label, 0) + 1
            v.add(LOST_FIRST, f"{_describe(a)}: its run was created by re-send {resend_created[0].sid} ({label})")
        else:
            v.add(LOST, f"{_describe(a)}: no record of it, no dead letter, not waiting in a down broker")
    v.accounted = dict(counts)


def _by_key(h: History, v: Verdict) -> None:
    v.accounting = "key"
    v.notes.append("the product records no submission outcomes: lost is judged by (tenant, key), so a first "
                   "publish lost and closed by its producer's re-send of the key cannot be seen")
    held = {(tenant, key) for rows in h.runs.values() for tenant, key, _, _ in rows}
    counts: Counter[str] = Counter()
    for a in h.acks:
        if (a.tenant, a.key) in held:
            counts["has a run"] += 1
        else:
            v.add(LOST, _describe(a))
    v.accounted = dict(counts)


def resends(h: History, v: Verdict) -> None:
    """Keys re-sent by their producer, and those whose run was created only after the re-send
    (an upper bound of what re-sending closed: a submission waiting out a failover counts too)."""
    for a in h.acks:
        if a.resent_at is not None:
            v.resent[a.path] = v.resent.get(a.path, 0) + 1
            if h.created.get((a.tenant, a.key), 0.0) > a.resent_at:
                v.created_after_resend[a.path] = v.created_after_resend.get(a.path, 0) + 1
