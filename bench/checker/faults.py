"""The fault log as the checker's independent clock: which regions a fault took the lease from
(killed, or cut off from a majority), which processes it killed, and when an heir adopted.

A driver that records only ``kind``, ``region``, ``t0``, ``t1`` and ``detail`` (the campaign as of
issue 12) is read by ``normalized``: the cut's mode and the failover's heir are taken from the
detail text it writes. Nothing here widens a bound to when a fault healed: ``healed`` (or ``t1``)
only ends the window in which a cut-off region must not start work.

The faults of issue 21 (``bench/campaign/lease_faults.py``) are read by the same rules, because of
what each one does to the lease (docs/explanation/leases.md):

* ``pause_main``: a SIGSTOP'd process beats for no one. If it held the region's lease keeper lock,
  nothing renews the region's lease (the lock stays with the stopped session, so no other process
  can take over), exactly as if the region were cut off from every peer at t0, until SIGCONT: the
  record says ``cut_off`` (the region) and ``healed`` (SIGCONT), and a record that says only "holds
  the lease keeper lock" in its detail is read so. If the lock is with another process, its lease
  stays held and nothing is forgiven or bounded.
* ``pause_pool``: the paused handler's lease is its keeper's, which keeps beating; the pause forgives
  nothing (its ``pids`` were stopped, not killed: ``killed_process`` reads kills only), so a second
  execution of the paused task is judged like any other repeat.
* ``slow_commit``: a row lock delays a claim or completion; with the region isolated meanwhile the
  record carries the cut (``severed``, ``healed``) at the cut's t0, and a handler started on the
  lock's release is bounded like any start in a cut-off region.
* ``keeper_handover`` and ``swallow_overrun`` take no lease from anyone and forgive nothing.
* ``handover_failover``: the victim and its heir are cut from each other only, so the victim keeps
  a majority through the third region until that region stops granting it; the record's t0 is when
  the injector saw it stop (never before it did), with ``cut_off`` the victim, the heir, the
  adoption and ``healed`` at the restore, and is judged like a cut-off failover.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from bench.checker.history import Fault

# Faults that kill the processes running handlers, and nothing wider.
PROCESS_KILLS = frozenset({"pool_kill", "worker_kill"})
# Faults that SIGSTOP a process (``pids``: stopped at t0, continued at t1), never a kill.
PAUSES = frozenset({"pause_main", "pause_pool"})
_KEEPER_PAUSED = "(holds the lease keeper lock)"
_PID = re.compile(r"\bpid (\d+)")
_CUT = re.compile(r"^(isolated|deaf|unheard|pair) ")
_FAILOVER = re.compile(r"failed over to (\S+) after ([\d.]+)s")
_CUT_FOR = re.compile(r" for (\d+)s")


def cut_off_from_majority(regions: Sequence[str], severed: set[tuple[str, str]]) -> tuple[str, ...]:
    """The regions that cannot count a majority while ``severed`` (subscriber, publisher) links
    are cut: a peer counts for R only if it hears R's beats and R hears its acknowledgement."""
    need = len(regions) // 2 + 1
    out = []
    for r in regions:
        peers = [p for p in regions if p != r and (p, r) not in severed and (r, p) not in severed]
        if 1 + len(peers) < need:
            out.append(r)
    return tuple(out)


def normalized(f: Fault, regions: Sequence[str]) -> Fault:
    """``f`` with ``pids``, ``killed``, ``severed``, ``cut_off``, ``heir`` and ``adopted_at`` filled
    in from what today's driver writes, when it did not set them itself."""
    if f.kind == "pool_kill" and not f.pids and (m := _PID.search(f.detail)):
        f = replace(f, pids=(int(m.group(1)),))
    if f.kind == "region_failover" and f.region and not f.killed:
        f = replace(f, killed=(f.region,))
        if f.heir is None and (m := _FAILOVER.search(f.detail)):
            f = replace(f, heir=m.group(1), adopted_at=f.t0 + float(m.group(2)))
        if f.healed is None:
            # t1 is after the restore and the wait for health, when the region may work again; the
            # log does not say when the restore returned, so only the time it surely was dead counts.
            f = replace(f, healed=f.adopted_at if f.adopted_at is not None else f.t0)
    if f.kind == "repl_cut" and not f.severed and f.cut_off is None and f.regions and (m := _CUT.match(f.detail)):
        mode, region = m.group(1), f.regions[0]  # the driver's regions: (region,), or (region, peer) for a pair
        others = [r for r in regions if r != region]
        links = {"isolated": [(region, o) for o in others] + [(o, region) for o in others],
                 "deaf": [(region, o) for o in others],
                 "unheard": [(o, region) for o in others],
                 "pair": [(region, p) for p in f.regions[1:]] + [(p, region) for p in f.regions[1:]]}[mode]
        f = replace(f, severed=tuple(links))
        if f.healed is None and (d := _CUT_FOR.search(f.detail)):
            # The links were restored after the cut's length (rounded to seconds in the detail);
            # t1 is later, after the wait for health, when the region may be working again.
            f = replace(f, healed=f.t0 + int(d.group(1)) - 0.5)
    if f.kind == "pause_main" and f.cut_off is None and f.region and _KEEPER_PAUSED in f.detail:
        f = replace(f, cut_off=(f.region,), healed=f.t1 if f.healed is None else f.healed)
    if f.cut_off is None:
        f = replace(f, cut_off=cut_off_from_majority(regions, set(f.severed)) if f.severed else ())
    return f


def lease_lost(f: Fault) -> tuple[str, ...]:
    """The regions ``f`` took the lease from at ``f.t0`` (a normalized fault)."""
    return tuple(dict.fromkeys((*f.killed, *(f.cut_off or ()))))


def no_work_window(f: Fault, region: str, promise_s: float) -> tuple[float, float] | None:
    """When ``region`` must start nothing because of ``f``: from L·(1+ρ)+margin after it lost its
    lease until it could hold one again (healed; t1 for a driver that does not say)."""
    if region not in lease_lost(f):
        return None
    return f.t0 + promise_s, f.healed if f.healed is not None else f.t1


def killed_process(f: Fault, region: str, pid: int | None) -> bool:
    """Whether ``f`` killed the process (``pid`` in ``region``) an execution ran in. Without a pid
    on either side, a process kill in the region counts (today's driver names no pool pids for a
    worker kill, and old ledger lines carry no pid)."""
    if region in f.killed:
        return True
    if f.kind not in PROCESS_KILLS or f.region != region:
        return False
    return not f.pids or pid is None or pid in f.pids
